"""The latency measurement runs on every installed backend (what it measures is not asserted: speed is
for benchmarks, not tests)."""

import numpy as np

from estella.runtime.backends import open_backend
from estella.runtime.generator import Generator
from estella.runtime.latency import ReplayedStep, measure


def test_measure_gives_a_row_per_installed_artifact(real_export):
    rows = list(measure(real_export, chars=5, repeats=1))
    assert [(r["backend"], r["precision"]) for r in rows] == [
        ("tflite", "float32"), ("tflite", "int8"), ("onnx", "float32"), ("onnx", "int8"), ("numpy", "float32")]
    assert all(r["bare_us"] > 0 and r["generate_us"] > 0 and r["runtime_alone_us"] > 0 for r in rows)


def test_replayed_step_hands_back_the_real_outputs(real_export):
    backend = open_backend(real_export, "onnx")
    replayed = ReplayedStep(backend)
    logits, state = replayed.step(np.zeros((1, 1), np.int32), replayed.initial_state())
    want_logits, want_state = backend.step(np.zeros((1, 1), np.int32), backend.initial_state())
    np.testing.assert_array_equal(logits, want_logits)
    np.testing.assert_array_equal(state, want_state)
    text = Generator(replayed, Generator.load(real_export, "numpy").vocab).generate("Pip", 10, temperature=0)
    assert text == "Pip" + Generator.load(real_export, "numpy").vocab[int(np.argmax(want_logits))] * 10
