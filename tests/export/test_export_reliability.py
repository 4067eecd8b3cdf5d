"""`estella export` under kill -9, on weights that are not a model, with --precision float32, and
with an --out it cannot write. Runs with random weights (build/random_run.py): no training.

Kills are deterministic: ESTELLA_TEST_KILL_AT=STAGE (export/folders.py, tests only) makes the export
SIGKILL itself on reaching STAGE, so the kill lands at a known point on a fast or a loaded machine."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHARS = list("\n !.,abcdefghijklmnopqrstuvwxyz")
# The float artifacts alone: what these tests check does not depend on precision, and they are the
# quickest to write (random weights this small are no model for the int8-full gate anyway).
FLOAT = ("--precision", "float32")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from estella.build.random_run import make_random_run

    return make_random_run(str(tmp_path_factory.mktemp("small") / "run"), CHARS, embedding_dim=8, units=16)


def export_cli(capsys, *args):
    from estella.runtime.cli import main

    code = main(["export", *map(str, args)])
    return code, capsys.readouterr().err


def created(out):
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)["provenance"]["created"], os.stat(os.path.join(out, "manifest.json")).st_ino


def killed_export(run, out, stage, **env):
    result = subprocess.run([sys.executable, "-m", "estella.runtime.cli", "export", run, "--out", out, "--force",
                             "--precision", "float32"],
                            capture_output=True, text=True, cwd=REPO, timeout=600,
                            env={**os.environ, "ESTELLA_TEST_KILL_AT": stage, **env})
    assert result.returncode == -9, result.stderr[-2000:]


def test_kill_9_while_the_new_export_is_swapped_in(small_run, tmp_path, capsys):
    from estella.export.folders import remove_stale_temps
    from estella.runtime.manifest import load_manifest

    parent = tmp_path / "exports"
    out = parent / "export"
    assert export_cli(capsys, small_run, "--out", out, *FLOAT)[0] == 0
    old = created(out)

    # Swapped in one rename, killed before the old export is removed: --out is the new export.
    killed_export(small_run, out, "after-swap")
    load_manifest(str(out), verify=True)
    assert created(out)[1] != old[1]
    leftovers = [n for n in os.listdir(parent) if n != "export"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".export-tmp-")
    remove_stale_temps(str(parent))
    assert os.listdir(parent) == ["export"]

    # Where the kernel cannot exchange two folders: killed with the old export moved aside and
    # --out missing; the next export into the parent puts the old one back before anything else.
    now = created(out)
    killed_export(small_run, out, "old-moved-aside", ESTELLA_TEST_NO_EXCHANGE="1")
    assert not out.exists()
    assert [n for n in os.listdir(parent) if n.startswith(".export-old-")]
    remove_stale_temps(str(parent))
    assert os.listdir(parent) == ["export"] and created(out) == now
    load_manifest(str(out), verify=True)


def test_kill_9_before_the_manifest_leaves_the_old_export_and_no_loadable_folder(small_run, tmp_path, capsys):
    from estella.runtime.manifest import ManifestError, load_manifest

    parent = tmp_path / "exports"
    out = parent / "export"
    assert export_cli(capsys, small_run, "--out", out, *FLOAT)[0] == 0
    old = created(out)
    killed_export(small_run, out, "artifacts-written")
    assert created(out) == old
    (tmp,) = [parent / n for n in os.listdir(parent) if n.startswith(".export-tmp-")]
    with pytest.raises(ManifestError, match="unfinished export"):
        load_manifest(str(tmp))
    assert export_cli(capsys, small_run, "--out", out, "--force", *FLOAT)[0] == 0  # the next export clears it
    assert os.listdir(parent) == ["export"]


def test_nan_weights_are_never_exported(small_run, tmp_path, capsys):
    from estella.build.model import build_model

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    model = build_model(len(CHARS), 8, 16)
    model.load_weights(str(run / "best.weights.h5"))
    kernel, recurrent, bias = model.get_layer("gru").get_weights()
    recurrent[0, 0] = np.nan
    model.get_layer("gru").set_weights([kernel, recurrent, bias])
    model.save_weights(str(run / "best.weights.h5"))
    state = json.loads((run / "state.json").read_text())  # a self-consistent run: state.json vouches for them
    state["best_sha256"] = hashlib.sha256((run / "best.weights.h5").read_bytes()).hexdigest()
    (run / "state.json").write_text(json.dumps(state))
    code, err = export_cli(capsys, run, "--out", tmp_path / "out")
    assert code == 2 and "NaN or infinite values (layer0_recurrent_kernel)" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and os.listdir(tmp_path) == ["run"]


def test_precision_float32_writes_the_float_artifacts_alone(small_run, tmp_path, capsys):
    from estella.runtime.cli import main
    from estella.runtime.manifest import load_manifest

    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "estella.runtime.cli", "export", small_run, "--out", out,
                             "--precision", "float32"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""  # quiet by default: no absl, oneDNN or LiteRT lines
    manifest = load_manifest(str(out), verify=True)
    assert {a["precision"] for a in manifest["artifacts"]} == {"float32"}
    assert {a["format"] for a in manifest["artifacts"]} == {"savedmodel", "tflite", "onnx", "numpy"}
    assert not (out / "model.int8.tflite").exists() and not (out / "model.int8.onnx").exists()
    assert all(numbers["passed"] for numbers in manifest["parity"]["artifacts"].values())
    assert main(["generate", str(out), "--precision", "int8", "--chars", "3"]) == 2
    assert "no int8 artifact" in capsys.readouterr().err
    assert main(["generate", str(out), "--chars", "3", "--seed", "1"]) == 0


def test_a_bad_precision_is_refused_before_tensorflow(small_run, tmp_path):
    code = ("import sys; from estella.runtime.cli import main; "
            f"code = main(['export', {small_run!r}, '--out', {str(tmp_path / 'o')!r}, '--precision', 'int4']); "
            "assert 'tensorflow' not in sys.modules; sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and "invalid choice: 'int4'" in result.stderr


def test_cheap_checks_answer_before_tensorflow_is_imported(tmp_path):
    (tmp_path / "file").write_text("mine")
    for argv in (["export", str(tmp_path / "nope")],
                 ["export", str(tmp_path), "--out", str(tmp_path / "file" / "export")]):
        if argv[1] == str(tmp_path):
            (tmp_path / "config.json").write_text("{}")
        code = ("import sys; from estella.runtime.cli import main; "
                f"code = main({argv!r}); assert 'tensorflow' not in sys.modules, 'imported'; sys.exit(code)")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("case", ["dangling-link", "link-to-file", "read-only"])
def test_an_out_that_cannot_be_written_is_exit_2(small_run, tmp_path, capsys, case):
    if case == "dangling-link":
        os.symlink(tmp_path / "nowhere", tmp_path / "link")
        out = tmp_path / "link" / "export"
    elif case == "link-to-file":
        (tmp_path / "file").write_text("mine")
        os.symlink(tmp_path / "file", tmp_path / "link")
        out = tmp_path / "link" / "export"
    else:
        out = read_only_folder(tmp_path) / "export"
    try:
        code, err = export_cli(capsys, small_run, "--out", out)
        assert code == 2 and f"cannot write --out {out}" in err and "Traceback" not in err, err
    finally:
        if case == "read-only":
            subprocess.run(["umount", str(out.parent)], check=False)


def read_only_folder(tmp_path):
    """A real read-only mount (a bind mount, where this machine allows one); else a path under a file,
    which no one can create folders in (root ignores a folder's mode)."""
    source, target = tmp_path / "source", tmp_path / "ro"
    source.mkdir()
    target.mkdir()
    done = subprocess.run(["mount", "-o", "bind,ro", str(source), str(target)], capture_output=True)
    if done.returncode == 0:
        return target
    (tmp_path / "file").write_text("mine")
    return tmp_path / "file"
