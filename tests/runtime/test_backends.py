"""Every backend on a real export of a tiny trained run, against the numpy reference and each other."""

import numpy as np
import pytest

from estella.runtime.backends import BackendError, open_backend
from estella.runtime.generator import Generator

FLOAT_BACKENDS = ["tflite", "onnx", pytest.param("savedmodel", marks=pytest.mark.tensorflow)]


@pytest.fixture(scope="module")
def reference(real_export):
    return open_backend(real_export, "numpy")


@pytest.fixture(scope="module")
def inputs(reference):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, reference.vocab_size, (3, 6)).astype(np.int32)
    state = (0.5 * rng.standard_normal((3, reference.state_size))).astype(np.float32)
    return ids, state


@pytest.mark.parametrize("name", FLOAT_BACKENDS)
def test_float_backend_equals_numpy(real_export, reference, inputs, name):
    backend = open_backend(real_export, name, "float32")
    assert (backend.name, backend.precision) == (name, "float32")
    logits, state = backend.step(*inputs)  # batch 3 and 6 characters: a resized or char-by-char graph
    want_logits, want_state = reference.step(*inputs)
    assert logits.dtype == np.float32 and state.dtype == np.float32
    np.testing.assert_allclose(logits, want_logits, atol=1e-4)
    np.testing.assert_allclose(state, want_state, atol=1e-4)


@pytest.mark.parametrize("name", ["tflite", "onnx"])
def test_int8_backend_is_close_to_numpy(real_export, reference, inputs, name):
    backend = open_backend(real_export, name, "int8")
    assert backend.precision == "int8"
    logits, state = backend.step(*inputs)
    want_logits, want_state = reference.step(*inputs)
    # dynamic-range int8: small errors, the same likeliest character almost everywhere
    assert np.abs(logits - want_logits).max() < 0.1 * np.abs(want_logits).max()
    assert np.abs(state - want_state).max() < 0.1
    agree = (logits.argmax(-1) == want_logits.argmax(-1)).mean()
    assert agree >= 0.8, f"{name} int8 picks another likeliest character in {1 - agree:.0%} of steps"


@pytest.mark.parametrize("name", ["numpy"] + FLOAT_BACKENDS)
def test_same_text_on_every_float_backend(real_export, name):
    """One sampler for all backends: greedy and seeded text are the same whatever runs the model."""
    numpy_gen = Generator.load(real_export, "numpy")
    gen = Generator.load(real_export, name)
    assert gen.generate("Pip", 120, temperature=0) == numpy_gen.generate("Pip", 120, temperature=0)
    settings = dict(temperature=0.8, top_k=30, top_p=0.95, seed=11)
    text = gen.generate("Pip", 120, **settings)
    assert text == numpy_gen.generate("Pip", 120, **settings)
    assert text == gen.generate("Pip", 120, **settings)


@pytest.mark.parametrize("name, precision", [("tflite", "float32"), ("onnx", "float32"), ("numpy", "float32"),
                                             ("tflite", "int8"), ("onnx", "int8")])
def test_streaming_equals_generate_and_batches_equal_single_streams(real_export, name, precision):
    gen = Generator.load(real_export, name, precision)
    assert "".join(gen.stream("Joe", 60, temperature=0.9, seed=2)) == gen.generate("Joe", 60, temperature=0.9, seed=2)
    primes = ["Pip", "Joe", "Miss Havisham"]
    batched = gen.generate_many(primes, 60, temperature=0 if precision == "int8" else 0.9, seed=3)
    singles = [gen.generate(p, 60, temperature=0 if precision == "int8" else 0.9, seed=3 + i)
               for i, p in enumerate(primes)]
    if precision == "float32":
        assert batched == singles
    else:
        # int8 scales activations by the whole batch's range: rows may drift apart from single runs
        same = np.mean([a == b for x, y in zip(batched, singles) for a, b in zip(x, y)])
        assert same > 0.8


def test_auto_picks_the_fastest_installed(real_export):
    backend = open_backend(real_export, "auto")
    assert backend.name == "tflite"  # LiteRT is installed in every test environment
    assert open_backend(real_export, "auto", "int8").name == "tflite"


@pytest.mark.parametrize("backend, precision, match", [
    ("tensorrt", "float32", "unknown backend 'tensorrt'; choose one of auto, tflite, onnx, numpy, savedmodel"),
    ("onnx", "fp16", "unknown precision 'fp16'"),
    ("numpy", "int8", "no int8 artifact for the numpy backend"),
])
def test_unknown_backend_or_precision(real_export, backend, precision, match):
    with pytest.raises(BackendError, match=match):
        open_backend(real_export, backend, precision)


def test_backend_reports_its_shapes(real_export, reference):
    tflite = open_backend(real_export, "tflite")
    onnx = open_backend(real_export, "onnx")
    assert (tflite.max_batch, tflite.max_time) == (1, 1)
    assert (onnx.max_batch, onnx.max_time) == (None, 1)
    assert (reference.max_batch, reference.max_time) == (None, None)
    assert tflite.state_size == onnx.state_size == reference.state_size and tflite.vocab_size == reference.vocab_size


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_tflite_pads_a_batch_inside_its_bucket_and_reallocates_only_outside_it(real_export, precision):
    """A server's batch changes as streams come and go: the interpreter is allocated for a power of
    two and a batch of at least half of it is padded, with the same rows as an exact allocation."""
    backend = open_backend(real_export, "tflite", precision)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, backend.vocab_size, (32, 1)).astype(np.int32)
    state = (0.5 * rng.standard_normal((32, backend.state_size))).astype(np.float32)
    steps = {}
    for rows, allocated in [(32, 32), (17, 32), (16, 32), (15, 16), (9, 16), (5, 8), (20, 32)]:
        steps[rows] = backend.step(ids[:rows], state[:rows])
        assert backend.batch == allocated, (rows, backend.batch)
        assert steps[rows][0].shape == (rows, 1, backend.vocab_size) and steps[rows][1].shape == (rows, backend.state_size)
    for rows in (17, 9, 5):  # the same rows when the interpreter is allocated for exactly that batch
        backend._resize(rows)
        logits, new_state = backend.step(ids[:rows], state[:rows])
        assert backend.batch == rows
        np.testing.assert_allclose(steps[rows][0], logits, rtol=0, atol=1e-5)
        np.testing.assert_allclose(steps[rows][1], new_state, rtol=0, atol=1e-5)
