import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from estella.build.errors import RunError
from estella.build.train import train

pytestmark = pytest.mark.tensorflow


def _state(run_dir):
    with open(os.path.join(run_dir, "state.json")) as f:
        return json.load(f)


def test_tiny_run_learns_and_writes_a_complete_run(tiny_run):
    state = _state(tiny_run)
    losses = [row["val_loss"] for row in state["history"]]
    with open(os.path.join(tiny_run, "vocab.json")) as f:
        vocab_size = json.load(f)["size"]
    assert losses[-1] < losses[0] < math.log(vocab_size)  # better than uniform guessing, and improving
    for name in ("config.json", "vocab.json", "best.weights.h5", "history.csv", "history.png"):
        assert os.path.getsize(os.path.join(tiny_run, name)) > 0, name
    checkpoints = sorted(os.listdir(os.path.join(tiny_run, "checkpoints")))
    assert checkpoints == [f"epoch-{r['epoch']:03d}-val{r['val_loss']:.4f}.weights.h5" for r in state["history"]]
    assert state["best_val_loss"] == min(losses)
    with open(os.path.join(tiny_run, "best.weights.h5"), "rb") as best, \
            open(os.path.join(tiny_run, "checkpoints", state["best_checkpoint"]), "rb") as checkpoint:
        assert best.read() == checkpoint.read()
    assert abs(state["best_val_bpc"] - state["best_val_loss"] / math.log(2)) < 1e-9


def test_resume_continues_from_the_last_epoch(tiny_run, corpus_slice, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run, run_dir)
    before = _state(run_dir)
    after = train(run_dir, corpus_slice, "tiny", verbose=0, epochs=before["epochs_done"] + 1)
    assert after["epochs_done"] == before["epochs_done"] + 1
    assert after["history"][:-1] == before["history"]
    assert len(os.listdir(os.path.join(run_dir, "checkpoints"))) == after["epochs_done"]


def test_resume_refuses_another_vocabulary(tiny_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run, run_dir)
    other = tmp_path / "other.txt"
    other.write_text("zyx wvu 0123456789 " * 500, encoding="utf-8")
    with pytest.raises(RunError, match="does not match the vocabulary"):
        train(run_dir, str(other), "tiny", verbose=0, epochs=5)
    assert _state(run_dir) == _state(tiny_run)  # nothing was lost


def test_resume_refuses_changed_hyperparameters(tiny_run, corpus_slice, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run, run_dir)
    with pytest.raises(RunError, match=r"cannot change \['units'\]"):
        train(run_dir, corpus_slice, "tiny", verbose=0, units=64)


def test_killed_run_loses_at_most_the_current_epoch(corpus_slice, tmp_path):
    run_dir = str(tmp_path / "killed")
    cmd = [sys.executable, "-m", "estella.runtime.cli", "train", run_dir, "--preset", "tiny",
           "--corpus", corpus_slice, "--epochs", "100", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if os.path.exists(os.path.join(run_dir, "state.json")) and _state(run_dir)["epochs_done"] >= 2:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
    finally:
        proc.wait()
    done = _state(run_dir)["epochs_done"]
    assert done >= 2
    state = train(run_dir, corpus_slice, "tiny", verbose=0, epochs=done + 1)
    assert state["epochs_done"] == done + 1
    assert not [f for f in os.listdir(run_dir) if f.startswith(".tmp-")]  # stale temp files are cleared


def test_too_short_corpus_names_the_flags(tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("abcdefghij " * 120, encoding="utf-8")
    with pytest.raises(RunError, match="--batch-size"):
        train(str(tmp_path / "run"), str(short), "tiny", verbose=0)
    assert not os.path.exists(tmp_path / "run" / "state.json")
