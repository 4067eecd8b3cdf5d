"""Every exported format is the same model: each row of the matrix measured against the Keras reference.

Rows load through the runtime's own loaders (open_backend); the TFLite rows run again under
tflite-runtime 2.14 in its own virtualenv. Thresholds are in estella.runtime.parity.
"""

import numpy as np
import pytest

import parity_models as models
from estella.runtime import parity as probe
from estella.runtime.backends import open_backend
from estella.runtime.backends.base import Backend

pytestmark = pytest.mark.tensorflow

MODEL_KEYS = [pytest.param(k, marks=pytest.mark.slow) if k in models.SLOW_MODELS else k for k in models.MODELS]


@pytest.mark.parametrize("row", models.ROWS, ids=[f"{b}-{p}" for b, p in models.ROWS])
@pytest.mark.parametrize("key", MODEL_KEYS)
def test_row_matches_keras_reference(parity_model, key, row):
    backend, precision = row
    measures = parity_model(key).measure(backend, precision)
    # The reference row is zero against itself by construction; its batch check still applies.
    failures = probe.check(measures, precision)
    assert not failures, f"model {key}, {backend} {precision}: " + "; ".join(failures)


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_tflite_runtime_matches_keras_reference(parity_model, key, tmp_path):
    rows, out = parity_model(key).measure_tflite_runtime(str(tmp_path))
    assert out["interpreter"].startswith("tflite_runtime 2.14"), out["interpreter"]
    assert out["numpy"].startswith("1."), out["numpy"]
    failures = [f"{precision}: {f}" for precision, m in rows.items() for f in probe.check(m, precision)]
    assert set(rows) == {"float32", "int8"} and not failures, f"model {key}: " + "; ".join(failures)



class ShiftedLogits(Backend):
    """A real backend whose logits come out moved by a constant: a row that is off by exactly that much."""

    def __init__(self, inner, shift):
        self.inner, self.shift = inner, np.float32(shift)
        for attribute in ("name", "precision", "vocab_size", "state_size", "max_batch", "max_time"):
            setattr(self, attribute, getattr(inner, attribute))

    def _step(self, ids, state):
        logits, new_state = self.inner._step(ids, state)
        return logits + self.shift, new_state


def test_the_checks_catch_a_row_that_is_off(parity_model):
    """Logits off by 1e-3 fail the float checks (and only on logits); off by 1.0 they fail the int8 ones too."""
    model = parity_model("c")
    numpy_row = open_backend(model.export_dir, "numpy", "float32")
    off = probe.compare(model.reference_record, probe.probe(ShiftedLogits(numpy_row, 1e-3), model.inputs), model.words)
    failures = probe.check(off, "float32")
    assert any(f.startswith("text_dlogits") for f in failures), failures
    assert not any("dstate" in f for f in failures), failures
    far = probe.compare(model.reference_record, probe.probe(ShiftedLogits(numpy_row, 1.0), model.inputs), model.words)
    assert any(f.startswith("text_dlogits") for f in probe.check(far, "int8")), far
