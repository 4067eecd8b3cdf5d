"""`estella evaluate` where the runtime runs, the TensorFlow-free virtualenv included: every installed
backend scores the same text alike; a backend whose interpreter is missing is named, not a crash."""

import importlib.util

import pytest

TEXT = ("It was a bright cold day, and Pip walked to the forge with Joe. "
        "The marshes were dark, and the wind came in from the sea.\n") * 4


def test_evaluate_all_rows_on_a_text(real_export, tmp_path, capsys):
    from estella.runtime.cli import main

    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    assert main(["evaluate", real_export, "--text", str(path), "--all"]) == 0
    out = capsys.readouterr().out
    assert f"{len(TEXT)} characters, {len(TEXT) - 1} predictions" in out
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in ("float32", "int8"):
            rows[parts[0], parts[1]] = parts[2:]
    assert {("tflite", "float32"), ("onnx", "float32"), ("numpy", "float32"), ("tflite", "int8"),
            ("onnx", "int8")} <= set(rows)
    if importlib.util.find_spec("tensorflow") is None:
        assert rows["savedmodel", "float32"][:2] == ["not", "run:"]
    float_bpc = float(rows["numpy", "float32"][1])
    for (backend, precision), values in rows.items():
        if values[0] == "not":
            continue
        nats, bits = float(values[0]), float(values[1])
        assert 0 < nats and bits == pytest.approx(nats / 0.6931471805599453, abs=2e-4)
        assert bits == pytest.approx(float_bpc, abs=1e-3 if precision == "float32" else 0.05), (backend, precision)
