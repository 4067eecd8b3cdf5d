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


def random_stack_weights(V, cell, units, E=8, seed=0):
    """weights.npz schema 2 of any cell and depth (export/FORMAT.md), fan-in random, made with numpy alone."""
    from estella.runtime.weights_format import GATES, layer_keys

    rng = np.random.default_rng(seed)

    def fan_in(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    G, fan, w = GATES[cell], E, {"embedding": rng.standard_normal((V, E)).astype(np.float32)}
    for k, U in enumerate(units):
        bias = (2, G * U) if cell == "gru" else (G * U,)
        w.update(zip(layer_keys(k), (fan_in(fan, G * U), fan_in(U, G * U),
                                     (0.1 * rng.standard_normal(bias)).astype(np.float32))))
        fan = U
    w["dense_kernel"], w["dense_bias"] = fan_in(fan, V), (0.1 * rng.standard_normal(V)).astype(np.float32)
    return w


def schema2_sections(weights, vocab):
    """manifest.json's model and state sections, schema 2, written out here as FORMAT.md gives them."""
    from estella.runtime.weights_format import STATE_PARTS, architecture

    arch = architecture(weights)
    cell, units = arch["cell"], arch["units"]
    layout, offset = [], 0
    for k, U in enumerate(units):
        for part in STATE_PARTS[cell]:
            layout.append({"layer": k, "cell": cell, "part": part, "offset": offset, "size": U})
            offset += U
    names = [cell if k == 0 else f"{cell}_{k}" for k in range(len(units))]
    model = {"vocab": vocab, "vocab_size": arch["vocab_size"], "embedding_dim": arch["embedding_dim"], "cell": cell,
             "layers": [{"name": n, "cell": cell, "units": U} for n, U in zip(names, units)], "state_size": offset,
             "dropout": 0.0}
    return model, {"name": "state", "shape": ["batch", offset], "dtype": "float32", "initial": "zeros",
                   "layout": layout}


def write_numpy_export(folder, weights, vocab):
    """The numpy part of an export directory, as export/FORMAT.md describes it: schema 1 for schema-1
    weights (gru_kernel, ...), else schema 2."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "weights.npz")
    np.savez(path, **weights)
    data = open(path, "rb").read()
    V, E = weights["embedding"].shape
    artifact = {"name": "numpy-float32", "format": "numpy", "precision": "float32", "role": "step",
                "path": "weights.npz", "batch": None, "time": None,
                "files": [{"path": "weights.npz", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}]}
    if "gru_kernel" in weights:
        U = weights["gru_recurrent_kernel"].shape[0]
        manifest = {
            "schema_version": 1, "kind": "estella.char-gru",
            "model": {"vocab": vocab, "vocab_size": V, "embedding_dim": E, "units": U,
                      "layers": ["embedding", "gru", "dense"]},
            "state": {"name": "state", "shape": ["batch", U], "dtype": "float32", "initial": "zeros"},
            "artifacts": [artifact],
        }
    else:
        model, state = schema2_sections(weights, vocab)
        S = model["state_size"]
        artifact["inputs"] = [{"name": "ids", "shape": ["batch", "time"], "dtype": "int32"},
                              {"name": "state", "shape": ["batch", S], "dtype": "float32"}]
        artifact["outputs"] = [{"name": "logits", "shape": ["batch", "time", V], "dtype": "float32"},
                               {"name": "new_state", "shape": ["batch", S], "dtype": "float32"}]
        manifest = {"schema_version": 2, "kind": "estella.char-rnn", "model": model, "state": state,
                    "artifacts": [artifact]}
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return folder


@pytest.fixture(scope="session")
def numpy_weights():
    return random_weights(len(VOCAB))


@pytest.fixture(scope="session")
def numpy_export(numpy_weights, tmp_path_factory):
    return write_numpy_export(str(tmp_path_factory.mktemp("numpy_export")), numpy_weights, VOCAB)


@pytest.fixture(scope="session")
def lstm_weights():
    return random_stack_weights(len(VOCAB), "lstm", [16, 12])


@pytest.fixture(scope="session")
def lstm_export(lstm_weights, tmp_path_factory):
    """A schema-2 numpy export of a 2-layer LSTM (16 then 12 units: S = 56)."""
    return write_numpy_export(str(tmp_path_factory.mktemp("lstm_export")), lstm_weights, VOCAB)


@pytest.fixture
def make_numpy_export(tmp_path):
    """make(weights) -> an export folder of those arrays (schema 1 or 2, as the arrays are)."""
    made = []

    def make(weights):
        made.append(None)
        return write_numpy_export(str(tmp_path / f"export{len(made)}"), weights, VOCAB)
    return make


@pytest.fixture
def stack_weights():
    """stack_weights(cell, units, seed) -> fan-in random schema-2 arrays of that stack (E=8)."""
    return lambda cell, units, seed=0: random_stack_weights(len(VOCAB), cell, units, seed=seed)
