"""Runtime fixtures. No TensorFlow at import time: the runtime-only virtualenv loads this file too.

Two kinds of export directory:
- numpy_export: random weights written with numpy alone (weights.npz + a manifest); the generator,
  sampler and error tests run on it everywhere.
- real_export (tests/conftest.py): the `estella export` of a tiny trained run, with every format.
"""

import hashlib
import json
import os
import string

import numpy as np
import pytest

VOCAB = list("\n !.," + string.ascii_letters)


def random_weights(V, E=8, U=16, seed=0):
    rng = np.random.default_rng(seed)

    def fan_in(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    return {"embedding": rng.standard_normal((V, E)).astype(np.float32), "gru_kernel": fan_in(E, 3 * U),
            "gru_recurrent_kernel": fan_in(U, 3 * U),
            "gru_bias": (0.1 * rng.standard_normal((2, 3 * U))).astype(np.float32),
            "dense_kernel": fan_in(U, V), "dense_bias": (0.1 * rng.standard_normal(V)).astype(np.float32)}


def write_numpy_export(folder, weights, vocab):
    """The numpy part of an export directory, as export/FORMAT.md describes it."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "weights.npz")
    np.savez(path, **weights)
    data = open(path, "rb").read()
    V, E = weights["embedding"].shape
    U = weights["gru_recurrent_kernel"].shape[0]
    manifest = {
        "schema_version": 1, "kind": "estella.char-gru",
        "model": {"vocab": vocab, "vocab_size": V, "embedding_dim": E, "units": U,
                  "layers": ["embedding", "gru", "dense"]},
        "state": {"name": "state", "shape": ["batch", U], "dtype": "float32", "initial": "zeros"},
        "artifacts": [{"name": "numpy-float32", "format": "numpy", "precision": "float32", "role": "step",
                       "path": "weights.npz", "batch": None, "time": None,
                       "files": [{"path": "weights.npz", "bytes": len(data),
                                  "sha256": hashlib.sha256(data).hexdigest()}]}],
    }
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return folder


@pytest.fixture(scope="session")
def numpy_weights():
    return random_weights(len(VOCAB))


@pytest.fixture(scope="session")
def numpy_export(numpy_weights, tmp_path_factory):
    return write_numpy_export(str(tmp_path_factory.mktemp("numpy_export")), numpy_weights, VOCAB)
