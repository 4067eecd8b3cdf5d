"""`estella export` from the command line: bad input exits with code 2 and a message, and deletes nothing."""

import hashlib
import json
import os
import shutil

import pytest

pytestmark = pytest.mark.tensorflow


def export_cli(capsys, *args):
    from estella.runtime.cli import main

    code = main(["export", *map(str, args)])
    return code, capsys.readouterr().err


def copy_run(run, tmp_path, name="run"):
    dest = tmp_path / name
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("export", "checkpoints"))
    return dest


def test_missing_run(capsys, tmp_path):
    code, err = export_cli(capsys, tmp_path / "nope", "--out", tmp_path / "out")
    assert code == 2 and "config.json is missing" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_run_without_finished_epoch(capsys, tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    os.remove(run / "best.weights.h5")
    code, err = export_cli(capsys, run, "--out", tmp_path / "out")
    assert code == 2 and "best.weights.h5 is missing" in err
    assert not (tmp_path / "out").exists()


def _vouch_for(run, name):
    """Record a file's sha256 in state.json, as if training had written it: the checks after the hashes."""
    state = json.loads((run / "state.json").read_text())
    digest = hashlib.sha256((run / name).read_bytes()).hexdigest()
    if name == "best.weights.h5":
        state["best_sha256"] = digest
    else:
        state["files_sha256"][name] = digest
    (run / "state.json").write_text(json.dumps(state))


def test_half_written_weights(capsys, tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    data = (run / "best.weights.h5").read_bytes()
    (run / "best.weights.h5").write_bytes(data[:len(data) // 2])
    code, err = export_cli(capsys, run, "--out", tmp_path / "out")
    assert code == 2 and "best.weights.h5 is not the best epoch's weights" in err  # its sha256 tells first
    _vouch_for(run, "best.weights.h5")
    code, err = export_cli(capsys, run, "--out", tmp_path / "out")
    assert code == 2 and "cannot load" in err and "best.weights.h5" in err
    assert not (tmp_path / "out").exists()


def test_weights_that_do_not_match_the_config(capsys, tiny_run, tmp_path):
    run = copy_run(tiny_run, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["hparams"]["units"] = [2 * u for u in cfg["hparams"]["units"]]
    (run / "config.json").write_text(json.dumps(cfg))
    code, err = export_cli(capsys, run, "--out", tmp_path / "out")
    assert code == 2 and "config.json is changed since training wrote it" in err
    _vouch_for(run, "config.json")
    code, err = export_cli(capsys, run, "--out", tmp_path / "out")
    assert code == 2 and "cannot load" in err and f"--units {cfg['hparams']['units'][0]} " in err


def test_existing_output_needs_force(capsys, tiny_export, tmp_path):
    run, _ = tiny_export
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, err = export_cli(capsys, run, "--out", out)
    assert code == 2 and "--force" in err and str(out) in err
    code, err = export_cli(capsys, run, "--out", out, "--force")
    assert code == 2 and "not an estella export" in err
    assert (out / "notes.txt").read_text() == "mine"


def test_force_refuses_an_export_holding_foreign_files(capsys, tiny_export, tmp_path):
    run, export_dir = tiny_export
    out = tmp_path / "out"
    shutil.copytree(export_dir, out)
    (out / "saved_model" / "notes.txt").write_text("mine")
    code, err = export_cli(capsys, run, "--out", out, "--force")
    assert code == 2 and "saved_model/notes.txt" in err
    assert (out / "saved_model" / "notes.txt").read_text() == "mine"


def test_force_replaces_an_export(capsys, tiny_export, tmp_path):
    from estella.runtime.manifest import load_manifest

    run, export_dir = tiny_export
    out = tmp_path / "out"
    shutil.copytree(export_dir, out)
    (out / "model.onnx").write_bytes(b"stale")  # listed in the manifest, so ours to replace
    code, err = export_cli(capsys, run, "--out", out, "--force")
    assert code == 0, err
    load_manifest(str(out), verify=True)
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_out_that_is_a_file(capsys, tiny_run, tmp_path):
    out = tmp_path / "out"
    out.write_text("mine")
    code, err = export_cli(capsys, tiny_run, "--out", out, "--force")
    assert code == 2 and "not a directory" in err and out.read_text() == "mine"


def run_without_weights(tiny_run, tmp_path):
    """A run whose model cannot load: an error about --out proves --out was checked first."""
    run = copy_run(tiny_run, tmp_path)
    os.remove(run / "best.weights.h5")
    return run


def test_out_under_a_regular_file_is_refused_before_the_model_loads(capsys, tiny_run, tmp_path):
    run = run_without_weights(tiny_run, tmp_path)
    (tmp_path / "file").write_text("mine")
    out = tmp_path / "file" / "export"
    code, err = export_cli(capsys, run, "--out", out)
    assert code == 2 and f"cannot write --out {out}: {tmp_path / 'file'} is a file" in err, err
    assert "best.weights.h5" not in err and "Traceback" not in err
    assert (tmp_path / "file").read_text() == "mine"


def test_out_where_no_folder_can_be_made_is_refused_before_the_model_loads(capsys, tiny_run, tmp_path):
    run = run_without_weights(tiny_run, tmp_path)
    if os.geteuid() == 0:  # root ignores a folder's mode; sysfs refuses new folders to everyone
        parent = "/sys/estella-no-such-folder"
    else:
        parent = tmp_path / "locked"
        parent.mkdir(mode=0o555)
    out = os.path.join(parent, "export")
    code, err = export_cli(capsys, run, "--out", out)
    assert code == 2 and f"cannot write --out {out}" in err and "best.weights.h5" not in err, err


def test_the_next_export_removes_folders_that_killed_exports_left(capsys, tiny_run, tmp_path):
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)  # a process that has exited
    parent = tmp_path / "exports"
    stale = parent / f".export-tmp-{dead_pid}-abc"
    running = parent / f".export-tmp-{os.getpid()}-def"  # an export still at work (this process)
    unmarked = parent / f".export-tmp-{dead_pid}-ghi"  # not marked INCOMPLETE: not ours to judge
    for folder in (stale, running, unmarked):
        (folder / "saved_model").mkdir(parents=True)
    (stale / "INCOMPLETE").write_text("")
    (running / "INCOMPLETE").write_text("")
    run = run_without_weights(tiny_run, tmp_path)
    code, err = export_cli(capsys, run, "--out", parent / "export")
    assert code == 2 and "best.weights.h5 is missing" in err  # the export itself fails later, at the model
    assert sorted(os.listdir(parent)) == sorted([running.name, unmarked.name])


def test_an_unfinished_export_folder_is_not_loadable(tiny_export, tmp_path, monkeypatch):
    """While the export works, its temp folder has INCOMPLETE and no manifest.json: nothing loads it."""
    from estella.export import pipeline
    from estella.runtime.manifest import ManifestError, load_manifest

    seen = {}

    def stop_at_the_check(export_dir, *args):
        seen["files"] = sorted(os.listdir(export_dir))
        with pytest.raises(ManifestError):
            load_manifest(export_dir)
        raise KeyboardInterrupt  # as if killed here

    monkeypatch.setattr(pipeline, "check_export", stop_at_the_check)
    with pytest.raises(KeyboardInterrupt):
        pipeline.export_run(tiny_export[0], str(tmp_path / "out"))
    assert "INCOMPLETE" in seen["files"] and "manifest.json" not in seen["files"] and "model.onnx" in seen["files"]
