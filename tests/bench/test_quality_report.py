"""`estella quality`: the table is read from the runs' own files (nothing typed in), and a folder
that is not a trained run is refused with exit 2 naming it."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tensorflow  # the runs are trained here

ESTELLA = [sys.executable, "-m", "estella.runtime.cli"]


def quality(*args):
    return subprocess.run([*ESTELLA, "quality", *map(str, args)], capture_output=True, text=True)


def row_of(text, run):
    return next(line.split(" | ") for line in text.splitlines() if line.startswith(f"| {run} |"))


def test_each_run_gets_its_measured_losses(tiny_run, tiny_lstm_run, tmp_path):
    out = tmp_path / "QUALITY.md"
    done = quality(tiny_run, tiny_lstm_run, "--out", out)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    for run, layers in ((tiny_run, "1 x 32"), (tiny_lstm_run, "2 x 32,32")):
        with open(os.path.join(run, "state.json")) as f:
            state = json.load(f)
        row = row_of(text, run)
        assert layers in row
        assert f"{state['best_val_loss']:.4f} ({state['best_epoch']})" in row
        assert f"{len(state['history'])} (2)" in row  # epochs run (the preset's most)
        seconds = sum(e["seconds"] for e in state["history"])
        assert f"| {seconds / 60:.1f} |" in " | ".join(row) + " |"
    assert "not exported" in row_of(text, tiny_run)[-1]


def test_the_budget_keeps_only_the_epochs_inside_it(tiny_run):
    with open(os.path.join(tiny_run, "state.json")) as f:
        history = json.load(f)["history"]
    first = history[0]
    # A budget that ends between the first and the second epoch: within it is the first epoch's loss.
    budget = (first["seconds"] + history[1]["seconds"] / 2) / 60
    done = quality(tiny_run, "--out", "-", "--budget-minutes", budget)
    assert done.returncode == 0, done.stderr
    assert f"| {first['val_loss']:.4f} |" in done.stdout


def test_a_goal_above_every_loss_is_reached_at_the_first_epoch(tiny_run):
    done = quality(tiny_run, "--out", "-", "--goal", 100)
    assert done.returncode == 0, done.stderr
    assert "| epoch 1, " in done.stdout
    done = quality(tiny_run, "--out", "-", "--goal", 0.001)
    assert "not reached" in done.stdout


@pytest.mark.parametrize("flag,value", [("--budget-minutes", "0"), ("--budget-minutes", "nan"), ("--goal", "-1")])
def test_bad_flags_exit_2_naming_them(tiny_run, flag, value):
    done = quality(tiny_run, "--out", "-", flag, value)
    assert done.returncode == 2 and flag in done.stderr and "Traceback" not in done.stderr


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    out = tmp_path / "QUALITY.md"
    done = quality(tmp_path, "--out", out)
    assert done.returncode == 2 and str(tmp_path) in done.stderr and "config.json" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
