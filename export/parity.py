"""The export-time parity gate: the Keras reference against each artifact loaded by the runtime,
measured and judged by estella.runtime.parity, the one measure the parity suite (PARITY.md) uses.

The gate runs its step measures (probe_steps): single steps from the zero state and from random
states, and PRIME_STEPS fed-back steps along the start of the run's validation text (a run without
its corpus file uses text the reference samples itself, through the runtime's Sampler). check_steps
applies the suite's thresholds: float rows within 1e-4 everywhere; int8 rows top-1 >= 95% and
max |delta logits| <= 2% of the reference's logit range; NaN fails both. (The suite's checks on
generated text and batches stay in tests/parity: they cost thousands of steps per artifact.)
Every number goes into the manifest, with the bits per character of int8 and float on the validation text.
"""

import numpy as np
import tensorflow as tf

from estella.runtime import parity as measure
from estella.runtime.backends import backend_for, open_backend
from estella.runtime.backends.base import Backend
from estella.runtime.errors import EstellaError
from estella.runtime.evaluate import teacher_forced
from estella.runtime.sampling import Sampler

from .errors import ParityError

PRIME_STEPS = 300


class KerasReference(Backend):
    """The Keras step model behind the runtime's Backend interface, so that the same probe runs it.
    Called as a tf.function: the same Keras layers, ~10x faster than eager."""

    name, precision = "keras", "float32"

    def __init__(self, step_model, chars=None):
        self.chars = chars
        self.state_size = int(step_model.inputs[1].shape[-1])
        self.vocab_size = step_model.get_layer("logits").units
        self._call = tf.function(lambda ids, state: step_model([ids, state], training=False), input_signature=[
            tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, self.state_size], tf.float32)])

    def _step(self, ids, state):
        logits, new_state = self._call(ids, state)
        return logits.numpy(), new_state.numpy()


def sampled_ids(reference, steps, seed=0):
    """ids [steps]: characters drawn from the reference's own softmax by the runtime's Sampler, fed back.

    Drawn rather than greedy: an untrained model's argmax falls into a short cycle, and one
    near-tie would then repeat on a tenth of the steps.
    """
    sampler, rng = Sampler(temperature=1.0), np.random.default_rng(seed)
    ids, state, next_id = [], reference.initial_state(1), 0
    for _ in range(steps):
        ids.append(next_id)
        logits, state = reference.step(np.array([[next_id]], np.int32), state)
        next_id = sampler(logits[0, -1], rng)
    return np.array(ids, np.int32)


def prime_ids(reference, validation_ids, source, steps=PRIME_STEPS):
    """(ids [steps], description): the start of the run's validation text, else the reference's own output."""
    if validation_ids is not None and len(validation_ids) >= steps:
        return validation_ids[:steps], f"validation text of {source}"
    return sampled_ids(reference, steps), "text sampled from the reference, seed 0 (corpus file not available)"


def step_artifacts(manifest):
    return [a for a in manifest["artifacts"] if a.get("role", "step") == "step"]


def open_artifact(export_dir, manifest, artifact):
    return open_backend(export_dir, backend=backend_for(artifact),
                        precision=artifact["precision"], manifest=manifest)


def check_export(export_dir, manifest, reference, prime, prime_source, optional=()):
    """Check every step artifact of the manifest; return the manifest's parity section or raise ParityError.
    An artifact named in `optional` that fails is not an error: it goes into the section's "left_out"
    with the reason, for the caller to leave out of the export."""
    inputs = measure.make_step_inputs(prime)
    reference_record = measure.probe_steps(reference, inputs)
    results, failures, left_out = {}, [], {}
    for artifact in step_artifacts(manifest):
        try:
            backend = open_artifact(export_dir, manifest, artifact)
        except EstellaError as e:  # what a user's runtime would refuse (NaN weights, a wrong precision, ...)
            why = [f"the runtime refuses it: {e}"]
        else:
            numbers = measure.compare_steps(reference_record, measure.probe_steps(backend, inputs))
            why = measure.check_steps(numbers, artifact["precision"])
            results[artifact["name"]] = {**numbers, "passed": not why}
        if why and artifact["name"] in optional:
            left_out[artifact["name"]] = ", ".join(why)
            results.pop(artifact["name"], None)
        elif why:
            failures.append(f"{artifact['name']} ({artifact['path']}): " + ", ".join(why))
    if failures:
        raise ParityError("export parity check failed against the Keras reference: " + "; ".join(failures))
    return {"measure": "estella.runtime.parity.check_steps", "tolerance": measure.FLOAT_TOLERANCE,
            "int8_min_top1": measure.INT8_TOP1, "int8_range_fraction": measure.INT8_RANGE_FRACTION,
            "int8_full_text_fraction": measure.INT8_FULL_TEXT_FRACTION,
            "int8_full_max_bpc_cost": measure.INT8_FULL_MAX_BPC_COST,
            "prime_source": prime_source, "steps": int(len(prime)),
            "one_step_cases": f"{measure.ONE_STEP_CASES} from the zero state, {measure.ONE_STEP_CASES} from "
                              "random states in (-1, 1), one at a time",
            "artifacts": results, "left_out": left_out}


def bpc_section(export_dir, manifest, ids, source):
    """Teacher-forced loss on the validation text, in bits per character: every int8 artifact, and one
    float artifact (tflite, the fastest) for them all, since the float ones agree within 1e-4 (above)."""
    if ids is None or len(ids) < 2:
        return None
    steps = step_artifacts(manifest)
    floats = sorted((a for a in steps if a["precision"] == "float32"), key=lambda a: a["format"] != "tflite")
    measured = floats[:1] + [a for a in steps if a["precision"] != "float32"]
    return {"text": source, "chars": int(len(ids)), "float32_measured_on": floats[0]["name"] if floats else None,
            "artifacts": {a["name"]: round(teacher_forced(open_artifact(export_dir, manifest, a), ids)["bpc"], 6)
                          for a in measured}}
