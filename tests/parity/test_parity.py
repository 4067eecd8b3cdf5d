"""Every exported format is the same model: each row of the matrix measured against the Keras reference.

Rows load through the runtime's own loaders (open_backend); the TFLite rows run again under
tflite-runtime 2.14 in its own virtualenv. Thresholds are in parity_probe.py.
"""

import numpy as np
import pytest

import parity_models as models
import parity_probe as probe
from estella.runtime.backends import open_backend

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



def test_the_checks_catch_a_row_that_is_off(parity_model):
    """A float row whose output bias is moved by 1e-3 (a real numpy backend, one array changed)
    fails the float checks, and an int8 check fails on the same row: the thresholds bite."""
    model = parity_model("c")
    backend = open_backend(model.export_dir, "numpy", "float32")
    backend.dense_bias = backend.dense_bias + np.float32(1e-3)
    measures = probe.compare(model.reference_record, probe.probe(backend, model.inputs), model.words)
    failures = probe.check(measures, "float32")
    assert any(f.startswith("text_dlogits") for f in failures), failures
    assert not any(f.startswith("text_dstate") for f in failures), failures  # the bias is after the state
    backend.dense_bias = backend.dense_bias + np.float32(1.0)
    measures = probe.compare(model.reference_record, probe.probe(backend, model.inputs), model.words)
    assert any(f.startswith("text_dlogits") for f in probe.check(measures, "int8")), measures
