"""An export folder is untrusted input: the runtime opens nothing the manifest has not vouched for and
nothing outside the folder, checks the manifest's structure and its agreement with the artifacts, and
never loads an unfinished export. Every refusal is exit 2 with a message from `generate` and `inspect`."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from estella.runtime.backends import open_backend
from estella.runtime.cli import main
from estella.runtime.errors import EstellaError
from estella.runtime.manifest import ChecksumError, ManifestError, UnsafePathError, load_manifest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def export_copy(numpy_export, tmp_path):
    return str(shutil.copytree(numpy_export, tmp_path / "export"))


@pytest.fixture
def real_copy(real_export, tmp_path):
    return str(shutil.copytree(real_export, tmp_path / "real"))


def edit_manifest(folder, change):
    path = os.path.join(folder, "manifest.json")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    change(manifest)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f)


def artifact(manifest, name):
    return next(a for a in manifest["artifacts"] if a["name"] == name)


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def refused_by_generate_and_inspect(capsys, folder, message, *flags):
    for argv in (["generate", folder, "--chars", "5", *flags], ["inspect", folder]):
        code, out, err = cli(capsys, *argv)
        assert code == 2, (argv, out, err)
        assert message in err and "Traceback" not in err, err
    return err


# --- paths: relative, inside the folder (after symlinks), regular files -------------------------

def test_a_path_outside_the_export_is_refused_without_revealing_the_file(export_copy, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(os.path.join(export_copy, "weights.npz"), outside / "evil.npz")  # a loadable file: it must not load
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret content " * 1000)
    size = str(secret.stat().st_size)

    def to_outside(m):
        a = m["artifacts"][0]
        a["path"] = "../outside/evil.npz"
        a["files"][0]["path"] = "../outside/evil.npz"
    edit_manifest(export_copy, to_outside)
    refused_by_generate_and_inspect(capsys, export_copy, "must be a relative path inside the export folder")

    def to_secret(m):
        m["artifacts"][0]["files"].append({"path": "../../secret.txt", "bytes": 1, "sha256": "0" * 64})
    edit_manifest(export_copy, to_secret)
    err = refused_by_generate_and_inspect(capsys, export_copy, "must be a relative path inside the export folder")
    assert size not in err and "s3cret" not in err

    def absolute(m):
        m["artifacts"][0]["files"][-1]["path"] = str(secret)
    edit_manifest(export_copy, absolute)
    err = refused_by_generate_and_inspect(capsys, export_copy, "must be a relative path inside the export folder")
    assert size not in err and "s3cret" not in err


def test_a_symlink_out_of_the_export_is_refused(export_copy, tmp_path, capsys):
    target = tmp_path / "elsewhere.npz"
    shutil.move(os.path.join(export_copy, "weights.npz"), target)
    os.symlink(target, os.path.join(export_copy, "weights.npz"))  # same bytes, same sha256: still refused
    err = refused_by_generate_and_inspect(capsys, export_copy, "points outside the export folder")
    assert str(target.stat().st_size) not in err


def test_a_symlink_inside_the_export_is_followed(export_copy, capsys):
    os.rename(os.path.join(export_copy, "weights.npz"), os.path.join(export_copy, "real.npz"))
    os.symlink("real.npz", os.path.join(export_copy, "weights.npz"))
    assert cli(capsys, "generate", export_copy, "--chars", "5")[0] == 0


@pytest.mark.parametrize("make", ["fifo", "directory", "device"])
def test_a_path_that_is_not_a_regular_file_is_refused_without_hanging(export_copy, make):
    path = os.path.join(export_copy, "weights.npz")
    os.remove(path)
    if make == "fifo":
        os.mkfifo(path)  # opening it for reading would block forever
    elif make == "directory":
        os.mkdir(path)
    else:
        os.symlink("/dev/zero", path)  # outside too, but a device never ends either
    for command in ("generate", "inspect"):
        result = subprocess.run([sys.executable, "-m", "estella.runtime.cli", command, export_copy],
                                capture_output=True, text=True, timeout=60, cwd=REPO)
        assert result.returncode == 2, result.stderr
        assert ("is not a regular file" in result.stderr or "outside the export folder" in result.stderr)
        assert "Traceback" not in result.stderr


def test_a_manifest_that_is_a_fifo_is_refused(export_copy):
    os.remove(os.path.join(export_copy, "manifest.json"))
    os.mkfifo(os.path.join(export_copy, "manifest.json"))
    result = subprocess.run([sys.executable, "-m", "estella.runtime.cli", "inspect", export_copy],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2 and "is not a regular file" in result.stderr


# --- every file an artifact loads is verified ----------------------------------------------------

def test_an_artifact_whose_path_is_not_in_its_files_is_refused(export_copy, capsys):
    edit_manifest(export_copy, lambda m: m["artifacts"][0].update(
        files=[{"path": "other.bin", "bytes": 3, "sha256": "a" * 64}]))
    with open(os.path.join(export_copy, "other.bin"), "wb") as f:
        f.write(b"abc")
    refused_by_generate_and_inspect(capsys, export_copy, "is not in its files list")


def test_a_savedmodel_folder_with_unlisted_files_is_refused(real_copy, capsys):
    with open(os.path.join(real_copy, "saved_model", "1", "variables", "extra.data"), "wb") as f:
        f.write(b"\0" * 16)
    with pytest.raises(ChecksumError, match="holds files that the manifest does not list"):
        open_backend(real_copy, "savedmodel")
    code, _, err = cli(capsys, "inspect", real_copy)
    assert code == 2 and "variables/extra.data" in err


def test_a_removed_files_entry_is_refused(real_copy, capsys):
    edit_manifest(real_copy, lambda m: artifact(m, "savedmodel-float32")["files"].pop())
    with pytest.raises(ChecksumError, match="does not list"):
        open_backend(real_copy, "savedmodel")
    assert cli(capsys, "inspect", real_copy)[0] == 2


@pytest.mark.parametrize("backend, path", [
    ("tflite", "model.tflite"), ("onnx", "model.onnx"), ("numpy", "weights.npz"),
    pytest.param("savedmodel", "saved_model/1/variables/variables.data-00000-of-00001", marks=pytest.mark.tensorflow),
])
def test_a_tampered_file_is_refused_on_the_generate_path(real_copy, capsys, backend, path):
    full = os.path.join(real_copy, path)
    data = bytearray(open(full, "rb").read())
    data[len(data) // 2] ^= 0x01  # same size, one bit changed
    with open(full, "wb") as f:
        f.write(data)
    backends = [backend] + (["auto"] if backend == "tflite" else [])  # auto picks tflite: no fallback to onnx
    for name in backends:
        code, out, err = cli(capsys, "generate", real_copy, "--backend", name, "--chars", "5")
        assert code == 2 and out == "", (name, err)
        assert f"{path} does not match its sha256" in err and "Traceback" not in err
    assert cli(capsys, "inspect", real_copy)[0] == 2


def test_auto_refuses_a_tampered_onnx_where_it_picks_onnx(real_copy):
    """Where LiteRT is not installed, auto runs ONNX: a tampered model.onnx is refused, not skipped."""
    full = os.path.join(real_copy, "model.onnx")
    data = bytearray(open(full, "rb").read())
    data[-10] ^= 0x01
    open(full, "wb").write(data)
    code = ("import sys\nsys.modules['ai_edge_litert'] = sys.modules['tflite_runtime'] = None\n"
            "from estella.runtime.cli import main\n"
            f"sys.exit(main(['generate', {real_copy!r}, '--chars', '5', '--verbose']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and "model.onnx does not match its sha256" in result.stderr


# --- the manifest's structure and its agreement with the artifacts -------------------------------

def _set(path, value):
    def change(m):
        *keys, last = path
        node = m
        for k in keys:
            node = node[k]
        node[last] = value
    return change


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(model=[]), "model must be a JSON object"),
    (lambda m: m.update(artifacts={}), "artifacts must be a JSON list"),
    (lambda m: m.update(artifacts=["weights.npz"]), "artifacts[0] must be a JSON object"),
    (_set(("artifacts", 0, "format"), 3), "artifacts[0].format must be a non-empty string"),
    (lambda m: m["artifacts"][0].pop("path"), "artifacts[0].path must be a non-empty string"),
    (_set(("artifacts", 0, "files"), "weights.npz"), "artifacts[0] (numpy-float32).files must be a non-empty list"),
    (_set(("artifacts", 0, "files", 0), "weights.npz"), "files[0] must be a JSON object"),
    (_set(("artifacts", 0, "files", 0, "bytes"), "35 KB"), "files[0].bytes must be an integer >= 0"),
    (_set(("artifacts", 0, "files", 0, "sha256"), None), "files[0].sha256 must be 64 lowercase hex digits"),
    (_set(("artifacts", 0, "batch"), "one"), "artifacts[0] (numpy-float32).batch must be an integer >= 1 or null"),
    (_set(("model", "units"), "16"), "model.units must be an integer >= 1"),
    (_set(("model", "vocab_size"), 3), "model.vocab_size is 3 but model.vocab has"),
    (lambda m: m["model"]["vocab"].__setitem__(1, "ab"), "model.vocab must hold single characters, got 'ab'"),
    (lambda m: m["model"]["vocab"].__setitem__(1, "\n"), "model.vocab has characters more than once: ['\\n']"),
    (lambda m: m["model"]["vocab"].__setitem__(1, 7), "model.vocab must hold single characters, got 7"),
])
def test_a_malformed_manifest_is_one_clear_error(export_copy, capsys, change, message):
    edit_manifest(export_copy, change)
    with pytest.raises(ManifestError) as e:
        load_manifest(export_copy, verify=False)
    assert message in str(e.value)
    refused_by_generate_and_inspect(capsys, export_copy, message)


@pytest.mark.parametrize("text", ["[]", "null", "[" * 100_000, '{"schema_version": 1, "model": {}, "artifacts": []}'])
def test_odd_json_is_refused(export_copy, capsys, text):
    with open(os.path.join(export_copy, "manifest.json"), "w") as f:
        f.write(text)
    refused_by_generate_and_inspect(capsys, export_copy, "manifest.json")


@pytest.mark.parametrize("backend", ["tflite", "onnx", "numpy", pytest.param("savedmodel", marks=pytest.mark.tensorflow)])
def test_an_artifact_that_disagrees_with_the_manifest_is_refused_at_load(real_copy, capsys, backend):
    """A manifest one character short of the artifact: refused before any text, not an IndexError later."""
    def shorter_vocab(m):
        m["model"]["vocab"].pop()
        m["model"]["vocab_size"] -= 1
    edit_manifest(real_copy, shorter_vocab)
    with pytest.raises(EstellaError, match="has vocabulary size 74 but the manifest says 73"):
        open_backend(real_copy, backend)
    code, out, err = cli(capsys, "generate", real_copy, "--backend", backend, "--chars", "5")
    assert code == 2 and out == "" and "do not belong together" in err

    edit_manifest(real_copy, wider_state)
    with pytest.raises(EstellaError, match="has vocabulary size|has state size 32 but the manifest says 33|"
                                           r"arrays hold 1 gru layers of \[32\] units, but the manifest says 1 gru layers of \[33\]"):
        open_backend(real_copy, backend)
    assert cli(capsys, "inspect", real_copy)[0] == 2


def wider_state(m):
    """One more unit everywhere the manifest states the state's width (a consistent manifest, wrong for the files)."""
    m["model"]["layers"][0]["units"] += 1
    m["model"]["state_size"] += 1
    m["state"]["layout"][0]["size"] += 1
    m["state"]["shape"][-1] += 1
    for artifact in m["artifacts"]:
        for spec in artifact["inputs"] + artifact["outputs"]:
            if spec["name"] in ("state", "new_state"):
                spec["shape"][-1] += 1


def test_numpy_weights_with_a_wrong_array_are_refused(export_copy, numpy_weights, capsys):
    import hashlib

    import numpy as np

    path = os.path.join(export_copy, "weights.npz")
    np.savez(path, **{**numpy_weights, "dense_bias": numpy_weights["dense_bias"][:-1]})
    data = open(path, "rb").read()
    edit_manifest(export_copy, lambda m: m["artifacts"][0]["files"][0].update(
        bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
    code, out, err = cli(capsys, "generate", export_copy, "--chars", "5")
    assert code == 2 and "dense_bias has shape" in err


# --- an export killed half-way is never loadable --------------------------------------------------

def test_an_unfinished_export_folder_is_refused(numpy_export, tmp_path, capsys):
    tmp = str(shutil.copytree(numpy_export, tmp_path / ".export-tmp-k2j4"))
    refused_by_generate_and_inspect(capsys, tmp, "is an unfinished export")
    done = str(shutil.copytree(numpy_export, tmp_path / "marked"))
    open(os.path.join(done, "INCOMPLETE"), "w").close()
    refused_by_generate_and_inspect(capsys, done, "is an unfinished export")
    os.remove(os.path.join(done, "INCOMPLETE"))
    assert cli(capsys, "generate", done, "--chars", "5")[0] == 0


def test_unsafe_path_error_is_a_manifest_error():
    assert issubclass(UnsafePathError, ManifestError) and issubclass(ManifestError, EstellaError)


@pytest.mark.tensorflow  # needs the onnx package (the [train] extra) to write the graph
def test_an_onnx_graph_cannot_pull_in_external_weight_files(export_copy, capsys):
    """An ONNX graph that names an external data file beside it (here one inside the folder, unlisted)
    is refused before ONNX Runtime reads it (tests/runtime/test_crafted_artifacts.py: anywhere in the graph)."""
    import hashlib

    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    with open(os.path.join(export_copy, "weights.bin"), "wb") as f:
        f.write(np.ones(4, np.float32).tobytes())
    w = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("length", "16")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Add", ["state", "w"], ["new_state"])], "g",
                              [helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("new_state", TensorProto.FLOAT, [1, 4])], [w])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    with open(os.path.join(export_copy, "model.onnx"), "wb") as f:
        f.write(data)
    entry = {"path": "model.onnx", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    edit_manifest(export_copy, lambda m: m["artifacts"].append(
        {"name": "onnx-float32", "format": "onnx", "precision": "float32", "path": "model.onnx", "files": [entry]}))
    with pytest.raises(EstellaError, match="'onnx-float32' .* is refused before ONNX Runtime loads it"):
        open_backend(export_copy, "onnx")
