"""The export-time parity check: the Keras reference against each artifact, loaded by the runtime.

(a) one step from the zero state and from random states (batch 4);
(b) PRIME_STEPS fed-back steps along a real prime from the corpus: each side carries its own state
    (a run without its corpus file uses text sampled from the reference instead).
Float artifacts must match within TOLERANCE (logits and state); int8 artifacts must pick the same
top-1 character on at least INT8_MIN_TOP1 of the prime's steps. Every number goes into the manifest.
"""

import keras
import tensorflow as tf
import numpy as np

from estella.build.corpus import load as load_corpus
from estella.build.data import split
from estella.runtime.backends import BACKENDS, open_backend
from estella.runtime.errors import EstellaError

from .errors import ParityError

TOLERANCE = 1e-4
INT8_MIN_TOP1 = 0.95
PRIME_STEPS = 300


class Reference:
    """The Keras step model, and a view of it that also returns the GRU's state after every step."""

    def __init__(self, step_model):
        self.step_model = step_model
        self.units = step_model.get_layer("gru").units
        self._fast_step = tf.function(step_model)  # eager Keras costs ~35 ms a step at U=1024
        self.trace_model = keras.Model(step_model.inputs, [step_model.outputs[0], step_model.get_layer("gru").output[0]])

    def step(self, ids, state):
        return tuple(keras.ops.convert_to_numpy(t) for t in self.step_model([ids, state], training=False))

    def trace(self, ids):
        """ids [T] from the zero state -> logits [T, V] and the state after each step [T, U], in one call."""
        state = np.zeros((1, self.units), np.float32)
        logits, states = self.trace_model([ids[None, :].astype(np.int32), state], training=False)
        return keras.ops.convert_to_numpy(logits)[0], keras.ops.convert_to_numpy(states)[0]

    def sample(self, steps, seed=0):
        """ids [steps]: characters drawn from the reference's own softmax, fed back (fixed seed).

        Drawn rather than greedy: an untrained model's argmax falls into a short cycle, and one
        near-tie would then repeat on a tenth of the steps.
        """
        rng = np.random.default_rng(seed)
        ids, state, next_id = [], np.zeros((1, self.units), np.float32), 0
        for _ in range(steps):
            ids.append(next_id)
            logits, state = (t.numpy() for t in self._fast_step([np.array([[next_id]], np.int32), state]))
            p = np.exp(logits[0, -1] - logits[0, -1].max())
            next_id = int(rng.choice(len(p), p=p / p.sum()))
        return np.array(ids, np.int32)


def prime_ids(reference, cfg, vocab, steps=PRIME_STEPS):
    """(ids [steps], description): the start of the run's validation text, else the reference's own output."""
    path = cfg["corpus"].get("path")
    try:
        text = load_corpus(path).text if path else None
        ids = split(vocab.encode(text), cfg["hparams"].validation_fraction)[1] if text else None
    except (EstellaError, ValueError):  # the corpus moved, or has characters the run never saw
        ids = None
    if ids is not None and len(ids) >= steps:
        return ids[:steps], f"validation text of {path}"
    return reference.sample(steps), "text sampled from the reference, seed 0 (corpus file not available)"


def one_step_cases(reference, vocab_size, seed=0):
    """ids [4, 1] and states [4, U]: the zero state and three random states in (-1, 1), as a GRU's are."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, (4, 1)).astype(np.int32)
    states = rng.uniform(-1, 1, (4, reference.units)).astype(np.float32)
    states[0] = 0
    return ids, states


def compare(backend, reference, cases, prime, ref_trace):
    ids, states = cases
    ref_logits, ref_state = reference.step(ids, states)
    logits, new_state = backend.step(ids, states)
    result = {"one_step": {"batch": int(ids.shape[0]),
                           "max_abs_logits": _max_diff(logits, ref_logits),
                           "max_abs_state": _max_diff(new_state, ref_state)}}
    ref_logits, ref_states = ref_trace
    state = backend.initial_state(1)
    logits = np.empty_like(ref_logits)
    worst_state = 0.0
    for t, char_id in enumerate(prime):
        step_logits, state = backend.step(np.array([[char_id]], np.int32), state)
        logits[t] = step_logits[0, 0]
        worst_state = max(worst_state, _max_diff(state[0], ref_states[t]))
    result["prime"] = {"steps": int(len(prime)), "max_abs_logits": _max_diff(logits, ref_logits),
                       "max_abs_state": worst_state,
                       "top1_agreement": float(np.mean(logits.argmax(-1) == ref_logits.argmax(-1)))}
    return result


def check_export(export_dir, manifest, reference, prime, prime_source):
    """Check every step artifact of the manifest; return the manifest's parity section or raise ParityError."""
    backend_of_format = {fmt: name for name, (_, _, fmt) in BACKENDS.items()}
    cases = one_step_cases(reference, manifest["model"]["vocab_size"])
    ref_trace = reference.trace(prime)
    results, failures = {}, []
    for artifact in manifest["artifacts"]:
        if artifact.get("role", "step") != "step":
            continue
        backend = open_backend(export_dir, backend=backend_of_format[artifact["format"]],
                               precision=artifact["precision"], manifest=manifest)
        result = compare(backend, reference, cases, prime, ref_trace)
        result["passed"], why = _verdict(artifact["precision"], result)
        results[artifact["name"]] = result
        if why:
            failures.append(f"{artifact['name']} ({artifact['path']}): {why}")
    if failures:
        raise ParityError("export parity check failed against the Keras reference: " + "; ".join(failures))
    return {"tolerance": TOLERANCE, "int8_min_top1_agreement": INT8_MIN_TOP1, "prime_source": prime_source,
            "one_step_states": "zero and 3 random in (-1, 1)", "artifacts": results}


def _verdict(precision, result):
    if precision == "int8":
        top1 = result["prime"]["top1_agreement"]
        return (True, None) if top1 >= INT8_MIN_TOP1 else (
            False, f"top-1 agreement {top1:.2%} over {result['prime']['steps']} steps < {INT8_MIN_TOP1:.0%}")
    worst = {f"{part} {k}": v for part in ("one_step", "prime") for k, v in result[part].items()
             if k.startswith("max_abs") and not v <= TOLERANCE}  # not <=: NaN fails too
    if worst:
        return False, ", ".join(f"{k} = {v:.3g}" for k, v in worst.items()) + f" > {TOLERANCE:g}"
    return True, None


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
