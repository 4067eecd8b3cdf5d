"""A run's files are the ones its state.json vouches for, a kill at any point leaves a consistent run,
a folder of the user's is never written into, and damaged run files are errors, not tracebacks.

Kills happen at named points (ESTELLA_TEST_KILL_AT, build/fileio.py): no test depends on timing."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from estella.build import runfolder
from estella.build.config import load_config, preset
from estella.build.errors import RunError
from estella.build.model import build_model
from estella.build.train import check_model_fits, parameter_count, read_progress, train
from estella.build.vocab import Vocab
from estella.export.pipeline import export_run

pytestmark = pytest.mark.tensorflow


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run, run_dir)
    return run_dir


def _estella(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "estella.runtime.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), **kwargs)


def _files(folder):
    """{relative path: bytes} of every file under folder."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def test_a_kill_between_the_best_weights_and_state_json_is_refused_by_export_and_repaired_by_train(
        run_copy, corpus_slice):
    """Epoch 3 is a new best: its weights are copied to best.weights.h5, then the process dies before
    state.json names epoch 3. Export must not ship epoch 3's weights under epoch 2's numbers."""
    before = read_progress(run_copy)
    killed = _estella("train", run_copy, "--corpus", corpus_slice, "--epochs", "3", env={"ESTELLA_TEST_KILL_AT": "best-written"})
    assert killed.returncode == -9, killed.stderr[-2000:]  # it did reach the point: epoch 3 is a new best
    assert read_progress(run_copy) == before  # state.json still says epoch 2
    with pytest.raises(RunError, match=r"best\.weights\.h5 is not the best epoch's weights .*epoch 2.*"
                                       r"checkpoint .*epoch-002-.* is intact: copy it over"):
        export_run(run_copy, os.path.join(run_copy, "export"))
    cli = _estella("export", run_copy, "--out", os.path.join(run_copy, "export"))
    assert cli.returncode == 2 and "is not the best epoch's weights" in cli.stderr and "Traceback" not in cli.stderr
    assert not os.path.exists(os.path.join(run_copy, "export"))

    progress = train(run_copy, corpus_slice, verbose=0, epochs=3)  # the trainer repairs, then redoes epoch 3
    assert progress["epochs_done"] == 3 and progress["best_epoch"] == 3
    runfolder.verify_run_files(run_copy, progress)


def test_a_kill_before_state_json_at_any_point_leaves_a_run_that_resumes(run_copy, corpus_slice):
    """After the checkpoint and after the history: the run stays at epoch 2 and its files agree."""
    before = read_progress(run_copy)
    for stage in ("checkpoint-written", "history-written"):
        killed = _estella("train", run_copy, "--corpus", corpus_slice, "--epochs", "3", env={"ESTELLA_TEST_KILL_AT": stage})
        assert killed.returncode == -9, killed.stderr[-2000:]
        progress = read_progress(run_copy)
        assert progress == before
        runfolder.verify_run_files(run_copy, progress)


def test_swapped_vocabulary_characters_are_refused_by_export_and_resume(run_copy, corpus_slice):
    path = os.path.join(run_copy, "vocab.json")
    chars = Vocab.load(path).chars
    i, j = chars.index("e"), chars.index("t")
    chars[i], chars[j] = chars[j], chars[i]
    Vocab(chars).save(path)  # a well-formed vocabulary, only not the one the model was trained with
    for action in (lambda: export_run(run_copy, os.path.join(run_copy, "export")),
                   lambda: train(run_copy, corpus_slice, verbose=0, epochs=3)):
        with pytest.raises(RunError, match=r"vocab\.json is changed since training wrote it"):
            action()
    assert not os.path.exists(os.path.join(run_copy, "export"))


def test_a_changed_config_is_refused_by_export(run_copy):
    path = os.path.join(run_copy, "config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["hparams"]["embedding_dim"] += 0  # the same values, written differently: still not the recorded bytes
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    with pytest.raises(RunError, match=r"config\.json is changed since training wrote it"):
        export_run(run_copy, os.path.join(run_copy, "export"))


def test_train_refuses_a_folder_of_the_users_files_and_leaves_it_untouched(tmp_path, corpus_slice):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "config.json").write_text('{"mine": true}\n')
    (folder / "vocab.json").write_text('["a", "b"]\n')
    (folder / "notes.txt").write_text("my notes\n")
    before = _files(folder)
    result = _estella("train", str(folder), "--preset", "tiny", "--corpus", corpus_slice)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "holds files that estella train did not write (config.json, notes.txt, vocab.json)" in result.stderr
    assert "Traceback" not in result.stderr
    assert _files(folder) == before and sorted(os.listdir(folder)) == ["config.json", "notes.txt", "vocab.json"]
    with pytest.raises(RunError, match="did not write"):  # the API refuses too
        train(str(folder), corpus_slice, "tiny", verbose=0)
    assert _files(folder) == before


def test_ctrl_c_in_the_first_epoch_leaves_the_folder_as_it_was(tmp_path, corpus_slice):
    run_dir = tmp_path / "run"
    result = _estella("train", str(run_dir), "--preset", "tiny", "--corpus", corpus_slice,
                      env={"ESTELLA_TEST_KILL_AT": "epoch-1-begin:SIGINT"})
    assert result.returncode == 130, result.stderr[-2000:]
    assert "interrupted" in result.stderr and "Traceback" not in result.stderr
    assert "absl" not in result.stderr and "oneDNN" not in result.stderr  # TensorFlow's start-up lines
    assert sorted(os.listdir(run_dir)) == [".lock"]  # the lock file is never deleted (runlock.py)
    assert runfolder.check_ownership(str(run_dir)) is None  # and the folder can start a run again


def test_a_run_of_an_earlier_estella_without_the_marker_is_still_ours(run_copy, corpus_slice):
    os.unlink(os.path.join(run_copy, runfolder.MARKER))
    runfolder.check_ownership(run_copy)  # no error: state.json and config.json read as a run's


@pytest.mark.parametrize("name, content, message", [
    ("vocab.json", "[]", 'has no "chars" list'),
    ("vocab.json", '{"chars": null}', 'has no "chars" list'),
    ("vocab.json", '{"chars": ["a", "a"]}', "distinct single characters"),
    ("config.json", None, "config.json is not a valid run config"),
])
def test_damaged_run_files_are_named(run_copy, name, content, message):
    path = os.path.join(run_copy, name)
    if content is None:  # config.json with "units": "32"
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        cfg["hparams"]["units"] = "32"
        content = json.dumps(cfg)
    with open(path, "w", encoding="utf-8") as f:
        f.write(content)
    read = Vocab.load if name == "vocab.json" else lambda _: load_config(run_copy)
    with pytest.raises(RunError, match=message):
        read(path)


@pytest.mark.parametrize("change, message", [
    ({"best_val_loss": None}, "best_val_loss is None, not a number"),
    ({"best_val_loss": "0.5"}, "best_val_loss is '0.5', not a number"),
    ({"history": {"epoch": 1}}, "lacks epochs_done or history"),
    ({"epochs_done": "2"}, "lacks epochs_done or history"),
    ({"best_sha256": 7}, "best_sha256 is 7, not a string"),
])
def test_damaged_state_json_fields_exit_2_from_export_and_train(run_copy, corpus_slice, change, message):
    path = os.path.join(run_copy, "state.json")
    with open(path, encoding="utf-8") as f:
        progress = json.load(f)
    progress.update(change)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(progress, f)
    for action in (lambda: export_run(run_copy, os.path.join(run_copy, "export")),
                   lambda: train(run_copy, corpus_slice, verbose=0, epochs=3)):
        with pytest.raises(RunError, match=rf"state\.json is damaged \((it )?{message}"):
            action()


def test_damaged_state_json_exits_2_from_the_cli(run_copy):
    path = os.path.join(run_copy, "state.json")
    with open(path, encoding="utf-8") as f:
        progress = json.load(f)
    progress["best_val_loss"] = None
    with open(path, "w", encoding="utf-8") as f:
        json.dump(progress, f)
    result = _estella("export", run_copy)
    assert result.returncode == 2 and "best_val_loss is None, not a number" in result.stderr
    assert "Traceback" not in result.stderr


def test_units_past_the_flags_bound_are_refused_before_anything_is_written(tmp_path, corpus_slice):
    run_dir = tmp_path / "run"
    result = _estella("train", str(run_dir), "--preset", "tiny", "--units", "200000", "--corpus", corpus_slice)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--units must be from 1 to" in result.stderr and "Traceback" not in result.stderr
    assert not run_dir.exists() or sorted(os.listdir(run_dir)) == [".lock"]


def test_a_model_too_large_for_memory_is_refused_before_anything_is_written(tmp_path, corpus_slice):
    run_dir = tmp_path / "run"
    # Within every flag's range (--units stops at 8192), but about 10^11 weights: more than any machine
    # has (4 LSTM layers of 8192 need ~34 GB, which a large machine has).
    result = _estella("train", str(run_dir), "--preset", "tiny", "--embedding-dim", "2000000000", "--corpus",
                      corpus_slice)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "more than this machine's" in result.stderr and "--units" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(run_dir)) == [".lock"]


def test_a_model_larger_than_memory_is_refused_by_its_weight_count():
    hp = dataclasses.replace(preset("tiny"), units=[200_000])  # past the flag's own limit: the API's last guard
    with pytest.raises(RunError, match=r"has 120,\d{3},\d{3},\d{3} weights; training it needs about .* more than "
                                       r"this machine's"):
        check_model_fits(hp, 74)


@pytest.mark.parametrize("name, overrides", [("tiny", {}), ("tiny", {"units": 48, "embedding_dim": 8}),
                                             ("tiny-lstm", {}), ("tiny-lstm", {"units": [24, 40]})])
def test_parameter_count_is_the_models(name, overrides):
    hp = preset(name, **overrides)
    model = build_model(74, hp.embedding_dim, hp.units, cell=hp.cell, dropout=hp.dropout)
    assert parameter_count(hp, 74) == model.count_params()
