"""The Keras reference generator: rebuild a batch-1 model from a run's best weights and sample.

It samples like the original chapter's generate_text (logits / temperature -> categorical),
and it is the reference that the export stage checks every artifact against.
"""

import os

import keras
import numpy as np

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
    trained = build_model(len(vocab), hp.embedding_dim, hp.units)
    try:
        trained.load_weights(path)
    except Exception as e:  # Keras raises ValueError or OSError by cause; both mean the same to a user
        raise RunError(f"cannot load {path} into a model of V={len(vocab)} E={hp.embedding_dim} "
                       f"U={hp.units}: {e}") from None
    step = build_step_model(len(vocab), hp.embedding_dim, hp.units, batch_size=batch_size)
    copy_weights(trained, step)
    return step, vocab, cfg


def generate_text(step_model, vocab, prime, n_chars=500, temperature=1.0, seed=None):
    """Feed the prime, then sample one character at a time from logits / temperature."""
    if not prime:
        raise ValueError("--prime must have at least one character")
    if not temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {temperature}")
    rng = np.random.default_rng(seed)
    units = step_model.get_layer("gru").units
    state = np.zeros((1, units), np.float32)
    ids = vocab.encode(prime)[None, :]
    out = []
    for _ in range(n_chars):
        logits, state = (keras.ops.convert_to_numpy(t) for t in step_model([ids, state], training=False))
        scaled = logits[0, -1].astype(np.float64) / temperature
        p = np.exp(scaled - scaled.max())
        next_id = rng.choice(len(p), p=p / p.sum())
        out.append(vocab.chars[next_id])
        ids = np.array([[next_id]], np.int32)
    return prime + "".join(out)
