"""The Keras reference generator: rebuild a batch-1 model from a run's best weights and sample.

It feeds the prime and then one character at a time like the original chapter's generate_text,
and draws each character with the runtime's Sampler (the one sampler), so `estella sample` and
`estella generate` write the same text for the same seed. The step model is the reference that
the export stage checks every artifact against.
"""

import os

import keras
import numpy as np

from estella.runtime.sampling import Sampler

from .config import load_config
from .errors import RunError
from .model import build_model, build_step_model, copy_weights
from .vocab import Vocab


def load_reference(run_dir, batch_size=None, weights="best.weights.h5"):
    """Return (step_model, vocab, config) for a run: step_model(ids, state) -> (logits, new_state)."""
    cfg = load_config(run_dir)
    vocab = Vocab.load(os.path.join(run_dir, "vocab.json"))
    hp = cfg["hparams"]
    path = os.path.join(run_dir, weights)
    if not os.path.exists(path):
        raise RunError(f"{path} is missing: the run has no finished epoch yet (train it with `estella train`)")
    trained = build_model(len(vocab), hp.embedding_dim, hp.units, cell=hp.cell, dropout=hp.dropout)
    try:
        trained.load_weights(path)
    except Exception as e:  # Keras raises ValueError or OSError by cause; both mean the same to a user
        raise RunError(f"cannot load {path} into a model of V={len(vocab)} E={hp.embedding_dim} "
                       f"{hp.describe()}: {e}{_fallback_hint(run_dir, path)}") from None
    step = build_step_model(len(vocab), hp.embedding_dim, hp.units, cell=hp.cell, batch_size=batch_size)
    copy_weights(trained, step, cell=hp.cell, layers=hp.layers)
    return step, vocab, cfg


def _fallback_hint(run_dir, path):
    """Where best.weights.h5 is damaged, name the intact checkpoint it was copied from."""
    from .train import CHECKPOINTS, read_progress, sha256_file

    progress = read_progress(run_dir) or {}
    name = progress.get("best_checkpoint")
    source = os.path.join(run_dir, CHECKPOINTS, name) if name else None
    if not source or os.path.abspath(source) == os.path.abspath(path) or not os.path.isfile(source):
        return ""
    if sha256_file(source) != progress.get("best_sha256"):
        return ""
    return f". The file is damaged; the best epoch's checkpoint {source} is intact: copy it over {path}"


def generate_text(step_model, vocab, prime, n_chars=500, temperature=1.0, seed=None):
    """Feed the prime, then sample one character at a time from logits / temperature."""
    if not prime:
        raise ValueError("--prime must have at least one character")
    sampler = Sampler(temperature)  # checks the temperature: 0 is greedy, as in `estella generate`
    rng = np.random.default_rng(seed)
    state = np.zeros((1, step_model.inputs[1].shape[-1]), np.float32)  # [1, S]: the state row starts at zeros
    ids = vocab.encode(prime)[None, :]
    out = []
    for _ in range(n_chars):
        logits, state = (keras.ops.convert_to_numpy(t) for t in step_model([ids, state], training=False))
        next_id = sampler(logits[0, -1], rng)
        out.append(vocab.chars[next_id])
        ids = np.array([[next_id]], np.int32)
    return prime + "".join(out)
