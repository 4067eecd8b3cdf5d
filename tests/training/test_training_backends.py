"""The build stage trains under the JAX backend too, and weights cross between backends."""

import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow

# Runs in a fresh interpreter, because Keras picks its backend once per process.
JAX_SCRIPT = """
import sys, numpy as np, keras
from estella.build.sample import load_reference
from estella.build.train import train
assert keras.backend.backend() == "jax", keras.backend.backend()
action, run_dir, out = sys.argv[1:4]
if action == "train":
    train(run_dir, sys.argv[4], "tiny", verbose=0, epochs=1, steps_per_epoch=20)
model, vocab, cfg = load_reference(run_dir)
ids = np.arange(12, dtype=np.int32).reshape(2, 6) % len(vocab)
state = np.full((2, model.inputs[1].shape[-1]), 0.1, np.float32)
logits, new_state = model([ids, state])
np.savez(out, logits=keras.ops.convert_to_numpy(logits), new_state=keras.ops.convert_to_numpy(new_state))
"""


def _under_jax(*args):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", JAX_SCRIPT, *args], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def _tensorflow_outputs(run_dir):
    from estella.build.sample import load_reference

    model, vocab, cfg = load_reference(run_dir)
    ids = np.arange(12, dtype=np.int32).reshape(2, 6) % len(vocab)
    state = np.full((2, model.inputs[1].shape[-1]), 0.1, np.float32)
    return [np.asarray(t) for t in model([ids, state])]


def test_jax_trained_weights_load_under_tensorflow(corpus_slice, tmp_path):
    run_dir, out = str(tmp_path / "jax-run"), str(tmp_path / "jax.npz")
    _under_jax("train", run_dir, out, corpus_slice)
    expected = np.load(out)
    logits, new_state = _tensorflow_outputs(run_dir)
    np.testing.assert_allclose(logits, expected["logits"], atol=1e-5)
    np.testing.assert_allclose(new_state, expected["new_state"], atol=1e-5)


def test_tensorflow_trained_weights_load_under_jax(tiny_run, tmp_path):
    out = str(tmp_path / "jax.npz")
    _under_jax("load", tiny_run, out)
    expected = np.load(out)
    logits, new_state = _tensorflow_outputs(tiny_run)
    np.testing.assert_allclose(logits, expected["logits"], atol=1e-5)
    np.testing.assert_allclose(new_state, expected["new_state"], atol=1e-5)
