"""`estella evaluate`: teacher-forced loss of an export's artifacts, against Keras and the manifest."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow


def evaluate_cli(capsys, *args):
    from estella.runtime.cli import main

    code = main(["evaluate", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def rows(out):
    """{(backend, precision): (nats, bpc)} from the printed table."""
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[1] in ("float32", "int8"):
            found[parts[0], parts[1]] = (float(parts[2]), float(parts[3]))
    return found


def test_the_loss_is_the_keras_models_cross_entropy(tiny_export):
    """One stream, chunks carrying the state: the mean -log p(next char) of the Keras model on the same text."""
    import keras
    from estella.build.sample import load_reference
    from estella.export.validation import validation_text
    from estella.runtime.backends import open_backend
    from estella.runtime.evaluate import teacher_forced

    run, export_dir = tiny_export
    step_model, vocab, cfg = load_reference(run)
    ids, _ = validation_text(cfg, vocab)
    ids = ids[:700]
    logits, _ = step_model([ids[None, :-1], np.zeros((1, step_model.inputs[1].shape[-1]), np.float32)])
    expected = float(keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(
        ids[None, 1:], logits, from_logits=True)).mean())
    for backend in ("numpy", "tflite"):
        result = teacher_forced(open_backend(export_dir, backend), ids, chunk=256)  # 3 chunks
        assert result["nats"] == pytest.approx(expected, abs=1e-5)
        assert result["bpc"] == pytest.approx(expected / np.log(2), abs=1e-5) and result["chars"] == 700


def test_all_rows_on_the_validation_text_match_the_manifest(capsys, tiny_export):
    from estella.runtime.manifest import load_manifest

    _, export_dir = tiny_export
    manifest = load_manifest(export_dir)
    bpc = manifest["parity"]["bpc"]
    named = manifest["provenance"]["validation_text"]
    assert bpc["chars"] == named["chars"] > 1000 and set(bpc["artifacts"]) == {
        "tflite-float32", "tflite-int8", "onnx-int8"}
    code, out, err = evaluate_cli(capsys, export_dir, "--all")  # the manifest's path is not opened on its word
    assert code == 2 and f"--text {named['path']}" in err
    code, out, err = evaluate_cli(capsys, export_dir, "--all", "--text", named["path"])
    assert code == 0, err
    assert f"the validation text in {named['path']}" in out and f"{named['chars']} characters" in out
    table = rows(out)
    assert set(table) == {("savedmodel", "float32"), ("tflite", "float32"), ("tflite", "int8"),
                          ("onnx", "float32"), ("onnx", "int8"), ("numpy", "float32")}
    for (backend, precision), (nats, bits) in table.items():
        assert bits == pytest.approx(nats / np.log(2), abs=2e-4)
        name = f"{backend}-{precision}"
        if name in bpc["artifacts"]:
            assert bits == pytest.approx(bpc["artifacts"][name], abs=1e-4)
        # Every float row is the same model; int8 costs little on the tiny run.
        assert bits == pytest.approx(bpc["artifacts"]["tflite-float32"], abs=1e-3 if precision == "float32" else 0.05)


def test_a_text_file_and_its_unknown_characters(capsys, tiny_export, tmp_path):
    _, export_dir = tiny_export
    text = tmp_path / "text.txt"
    text.write_text("Pip and Joe went to the forge. \u263a" * 20, encoding="utf-8")
    code, out, err = evaluate_cli(capsys, export_dir, "--text", text, "--backend", "numpy")
    assert code == 2 and str(text) in err and "--skip-unknown" in err and "Traceback" not in err
    code, out, err = evaluate_cli(capsys, export_dir, "--text", text, "--backend", "numpy", "--skip-unknown",
                                  "--chars", 100)
    assert code == 0, err
    # The first 100 characters of the file, less the 3 smileys among them.
    assert list(rows(out)) == [("numpy", "float32")] and "97 characters" in out


def test_without_text_or_a_named_validation_text(capsys, tiny_export, tmp_path):
    _, export_dir = tiny_export
    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["provenance"]["validation_text"] = None
    (copy / "manifest.json").write_text(json.dumps(manifest))
    code, out, err = evaluate_cli(capsys, copy)
    assert code == 2 and "names no validation text" in err and "--text" in err
    code, out, err = evaluate_cli(capsys, export_dir, "--all", "--precision", "int8")
    assert code == 2 and "--all" in err


def test_evaluate_does_not_import_tensorflow(tiny_export):
    _, export_dir = tiny_export
    with open(os.path.join(export_dir, "manifest.json"), encoding="utf-8") as f:
        text = json.load(f)["provenance"]["validation_text"]["path"]
    code = ("import sys; from estella.runtime.cli import main; "
            f"assert main(['evaluate', {export_dir!r}, '--text', {text!r}, '--backend', 'numpy', '--chars', '50']) == 0; "
            "bad = [m for m in ('tensorflow', 'keras', 'estella.build', 'estella.export', 'estella.bench') "
            "if m in sys.modules]; assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
