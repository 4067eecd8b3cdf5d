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


# --- the manifest names a file outside the export: never opened on its word -----------------------

def _with_validation_text(folder, path, sha256="0" * 64, start=0, chars=100):
    import json
    import os

    manifest_path = os.path.join(folder, "manifest.json")
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    manifest["provenance"] = {"validation_text": {"path": str(path), "sha256": sha256, "start": start, "chars": chars}}
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f)


def test_the_manifests_validation_path_is_never_opened(numpy_export, tmp_path, capsys):
    """Whether the named file exists, is secret or is a FIFO, the answer is the same: nothing is opened,
    and nothing is said about the file but the path the manifest gave."""
    import os
    import shutil

    from estella.runtime.cli import main

    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret " * 999)
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)  # opening it for reading would hang
    answers = set()
    for i, path in enumerate((secret, tmp_path / "missing.txt", fifo)):
        folder = str(shutil.copytree(numpy_export, tmp_path / f"export{i}"))
        _with_validation_text(folder, path)
        assert main(["evaluate", folder]) == 2
        err = capsys.readouterr().err
        assert f"--text {path}" in err and "s3cret" not in err and "6993" not in err and "Traceback" not in err
        answers.add(err.replace(str(path), "PATH").replace(folder, "DIR"))
    assert len(answers) == 1, answers


def test_the_named_corpus_given_with_text_gives_its_validation_slice(numpy_export, tmp_path, capsys):
    import hashlib
    import shutil

    from estella.runtime.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    folder = str(shutil.copytree(numpy_export, tmp_path / "export"))
    _with_validation_text(folder, corpus, hashlib.sha256(corpus.read_bytes()).hexdigest(), start=10, chars=50)
    assert main(["evaluate", folder, "--text", str(corpus)]) == 0
    out = capsys.readouterr().out
    assert f"the validation text in {corpus} (from character 10): 50 characters" in out
    other = tmp_path / "other.txt"
    other.write_text(TEXT[:80], encoding="utf-8")  # not the corpus: the whole file
    assert main(["evaluate", folder, "--text", str(other)]) == 0
    assert f"{other}: 80 characters" in capsys.readouterr().out


def test_a_huge_sparse_text_is_refused_before_it_is_read(numpy_export, tmp_path, capsys):
    from estella.runtime.cli import main

    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.truncate(200 << 30)  # 200 GB, sparse
    assert main(["evaluate", numpy_export, "--text", str(huge)]) == 2
    err = capsys.readouterr().err
    assert "is larger than 256 MB" in err and "MemoryError" not in err and "Traceback" not in err


def test_provenance_that_is_not_an_object_is_refused(numpy_export, tmp_path, capsys):
    import json
    import os
    import shutil

    from estella.runtime.cli import main

    folder = str(shutil.copytree(numpy_export, tmp_path / "export"))
    path = os.path.join(folder, "manifest.json")
    manifest = json.load(open(path))
    manifest["provenance"] = [1]
    json.dump(manifest, open(path, "w"))
    for argv in (["evaluate", folder], ["inspect", folder], ["generate", folder, "--chars", "3"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "provenance must be a JSON object or null, got list" in err and "Traceback" not in err
