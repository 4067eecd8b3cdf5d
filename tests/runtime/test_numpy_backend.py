"""The numpy backend: the GRU step against Keras' own GRU, and its step() input checks."""

import numpy as np
import pytest

from estella.runtime.backends import open_backend
from estella.runtime.backends.base import StepInputError


@pytest.fixture(scope="module")
def numpy_backend(numpy_export):
    return open_backend(numpy_export, "numpy")


@pytest.mark.tensorflow
def test_numpy_step_equals_the_keras_gru(numpy_weights, numpy_backend):
    from estella.build.model import build_step_model

    V, E = numpy_weights["embedding"].shape
    U = numpy_weights["gru_recurrent_kernel"].shape[0]
    keras_step = build_step_model(V, E, U)
    keras_step.get_layer("embedding").set_weights([numpy_weights["embedding"]])
    keras_step.get_layer("gru").set_weights([numpy_weights[k] for k in ("gru_kernel", "gru_recurrent_kernel", "gru_bias")])
    keras_step.get_layer("logits").set_weights([numpy_weights["dense_kernel"], numpy_weights["dense_bias"]])

    rng = np.random.default_rng(3)
    ids = rng.integers(0, V, (3, 7)).astype(np.int32)
    state = rng.standard_normal((3, U)).astype(np.float32) * 0.5
    want_logits, want_state = (np.asarray(t) for t in keras_step([ids, state], training=False))
    logits, new_state = numpy_backend.step(ids, state)
    np.testing.assert_allclose(logits, want_logits, atol=1e-5)
    np.testing.assert_allclose(new_state, want_state, atol=1e-5)


def test_one_long_call_equals_one_char_at_a_time(numpy_backend):
    ids = np.array([[1, 5, 9, 2, 30]], np.int32)
    logits, state = numpy_backend.step(ids, numpy_backend.initial_state())
    s = numpy_backend.initial_state()
    for t in range(ids.shape[1]):
        step_logits, s = numpy_backend.step(ids[:, t:t + 1], s)
        np.testing.assert_allclose(step_logits[:, 0], logits[:, t], atol=1e-6)
    np.testing.assert_allclose(s, state, atol=1e-6)
    assert logits.dtype == np.float32 and state.dtype == np.float32
    assert logits.shape == (1, 5, numpy_backend.vocab_size) and state.shape == (1, numpy_backend.state_size)


@pytest.mark.parametrize("ids, state, match", [
    (np.zeros((1, 1), np.int32), np.zeros((1, 7), np.float32), r"shape \[batch, state_size\]"),
    (np.zeros((2, 1), np.int32), np.zeros((1, 16), np.float32), r"shape \[batch, state_size\]"),
    (np.zeros((1, 1), np.int32), np.zeros((1, 16), np.float64), "float32"),
    (np.zeros((1, 1), np.int32), [[0.0] * 16], "float32"),
    (np.zeros((1, 1), np.float32), np.zeros((1, 16), np.float32), "integer"),
    (np.zeros((1,), np.int32), np.zeros((1, 16), np.float32), r"\[batch, time\]"),
    (np.zeros((1, 0), np.int32), np.zeros((1, 16), np.float32), r"\[batch, time\]"),
    (np.full((1, 1), -1, np.int32), np.zeros((1, 16), np.float32), "ids must be in"),
])
def test_step_refuses_bad_inputs(numpy_backend, ids, state, match):
    with pytest.raises(StepInputError, match=match):
        numpy_backend.step(ids, state)


def test_step_refuses_ids_past_the_vocabulary(numpy_backend):
    V = numpy_backend.vocab_size
    with pytest.raises(StepInputError, match=rf"ids must be in \[0, {V}\)"):
        numpy_backend.step(np.full((1, 1), V, np.int32), numpy_backend.initial_state())


def blas_threads():
    from threadpoolctl import threadpool_info

    return sorted({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})


def test_numpy_backend_pins_its_blas_threads(numpy_export):
    """One BLAS thread by default (the per-character product is too small to split), or --threads N."""
    import os

    assert blas_threads(), "numpy's BLAS is not visible to threadpoolctl"
    if (os.cpu_count() or 1) >= 2:
        open_backend(numpy_export, "numpy", num_threads=2)
        assert blas_threads() == [2]
    open_backend(numpy_export, "numpy")
    assert blas_threads() == [1]


@pytest.mark.tensorflow
@pytest.mark.parametrize("cell, units", [("lstm", [16, 12]), ("gru", [12, 16, 8]), ("lstm", [8, 8, 8, 8])])
def test_numpy_stack_equals_the_keras_step_model(stack_weights, make_numpy_export, cell, units):
    """Every cell and depth: the numpy backend (schema-2 weights.npz, state split by the manifest's
    layout) against build_step_model, whose state row the contract defines."""
    from estella.build.model import build_step_model, rnn_layer_names
    from estella.runtime.weights_format import layer_keys

    weights = stack_weights(cell, units, seed=5)
    backend = open_backend(make_numpy_export(weights), "numpy")
    keras_step = build_step_model(backend.vocab_size, 8, units, cell=cell)
    keras_step.get_layer("embedding").set_weights([weights["embedding"]])
    for k, name in enumerate(rnn_layer_names(cell, len(units))):
        keras_step.get_layer(name).set_weights([weights[key] for key in layer_keys(k)])
    keras_step.get_layer("logits").set_weights([weights["dense_kernel"], weights["dense_bias"]])

    rng = np.random.default_rng(3)
    ids = rng.integers(0, backend.vocab_size, (3, 7)).astype(np.int32)
    state = rng.standard_normal((3, backend.state_size)).astype(np.float32) * 0.5
    want_logits, want_state = (np.asarray(t) for t in keras_step([ids, state], training=False))
    logits, new_state = backend.step(ids, state)
    np.testing.assert_allclose(logits, want_logits, atol=1e-5)
    np.testing.assert_allclose(new_state, want_state, atol=1e-5)


def test_lstm_stack_one_call_equals_one_char_at_a_time(lstm_export):
    backend = open_backend(lstm_export, "numpy")
    assert backend.state_size == 2 * (16 + 12)
    ids = np.random.default_rng(1).integers(0, backend.vocab_size, (2, 6)).astype(np.int32)
    logits, state = backend.step(ids, backend.initial_state(2))
    s = backend.initial_state(2)
    for t in range(ids.shape[1]):
        step_logits, s = backend.step(ids[:, t:t + 1], s)
        np.testing.assert_allclose(step_logits[:, 0], logits[:, t], atol=1e-6)
    np.testing.assert_allclose(s, state, atol=1e-6)
    assert np.abs(state[:, 28 + 12:]).max() > 0  # the last layer's c moved: every part is carried


def test_schema1_weights_read_as_a_one_layer_gru(numpy_weights, numpy_backend, make_numpy_export):
    """The same arrays under schema 2's names give the same step as the schema-1 file."""
    renamed = {{"gru_kernel": "layer0_kernel", "gru_recurrent_kernel": "layer0_recurrent_kernel",
                "gru_bias": "layer0_bias"}.get(k, k): v for k, v in numpy_weights.items()}
    schema2 = open_backend(make_numpy_export(renamed), "numpy")
    ids = np.arange(6, dtype=np.int32)[None]
    for got, want in zip(schema2.step(ids, schema2.initial_state()), numpy_backend.step(ids, numpy_backend.initial_state())):
        np.testing.assert_array_equal(got, want)
