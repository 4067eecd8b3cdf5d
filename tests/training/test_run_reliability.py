"""A run directory is never corrupted: one trainer at a time, damaged files named, divergence kept out."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from estella.build import runlock
from estella.build.corpus import load
from estella.build.errors import CorpusError, RunError
from estella.build.train import sha256_file, train
from estella.export.errors import ExportError
from estella.export.pipeline import export_run

pytestmark = pytest.mark.tensorflow


def _progress(run_dir):
    with open(os.path.join(run_dir, "state.json")) as f:
        return json.load(f)


def _write_progress(run_dir, progress):
    with open(os.path.join(run_dir, "state.json"), "w") as f:
        json.dump(progress, f)


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run, run_dir)
    return run_dir


def _estella(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "estella.runtime.cli", *args], capture_output=True, text=True,
                          **kwargs)


def test_one_trainer_per_run_and_a_line_per_epoch(corpus_slice, tmp_path):
    """A second trainer exits 2 at once naming the first one's pid; the first one's log, not a
    terminal, has one line per epoch."""
    run_dir, log = str(tmp_path / "run"), tmp_path / "train.log"
    with open(log, "w") as out:
        first = subprocess.Popen([sys.executable, "-m", "estella.runtime.cli", "train", run_dir, "--preset", "tiny",
                                  "--corpus", corpus_slice, "--epochs", "1000", "--steps-per-epoch", "5"],
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not (os.path.exists(os.path.join(run_dir, "state.json")) and _progress(run_dir)["epochs_done"] >= 1):
            assert first.poll() is None and time.time() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        second = _estella("train", run_dir, "--corpus", corpus_slice)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"estella train (pid {first.pid}) is writing it" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    epochs = _progress(run_dir)["epochs_done"]
    lines = log.read_text().splitlines()
    assert "\r" not in log.read_text() and "\u2501" not in log.read_text()  # no progress bar
    assert len([line for line in lines if " - val_loss: " in line]) in (epochs, epochs + 1)  # +1: killed after its line


def test_export_waits_for_no_trainer_and_trainers_for_no_export(run_copy, corpus_slice):
    with runlock.exclusive(run_copy):  # as `estella train` holds it
        with pytest.raises(runlock.RunLocked, match=rf"estella train \(pid {os.getpid()}\) is writing it"):
            export_run(run_copy, os.path.join(run_copy, "export"))
    assert not os.path.exists(os.path.join(run_copy, "export"))
    with runlock.shared(run_copy), runlock.shared(run_copy):  # as exports hold it: readers share
        with pytest.raises(runlock.RunLocked, match="an export reading it"):
            train(run_copy, corpus_slice, verbose=0, epochs=5)
    with runlock.exclusive(run_copy):  # released: free again
        pass


def test_a_run_directory_that_cannot_be_written_is_named(tmp_path, corpus_slice):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunError, match=rf"cannot write the run directory {blocker}/run: Not a directory"):
        train(str(blocker / "run"), corpus_slice, "tiny", verbose=0)


def test_damaged_state_json_is_named_by_resume_and_export(run_copy, corpus_slice):
    path = os.path.join(run_copy, "state.json")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    for action in (lambda: train(run_copy, corpus_slice, verbose=0, epochs=5), lambda: export_run(run_copy)):
        with pytest.raises(RunError, match=rf"{path} is damaged .*the last epoch's weights are intact in .*epoch-002"):
            action()


def test_damaged_last_checkpoint_names_the_last_good_one(run_copy, corpus_slice):
    progress = _progress(run_copy)
    last = os.path.join(run_copy, "checkpoints", progress["last_checkpoint"])
    with open(last, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(RunError, match=rf"{last} is damaged .*last good epoch checkpoint is .*epoch-001-"):
        train(run_copy, corpus_slice, verbose=0, epochs=5)
    assert _progress(run_copy) == progress


def test_damaged_best_weights_name_the_intact_copy(run_copy):
    best = os.path.join(run_copy, "best.weights.h5")
    with open(best, "r+b") as f:
        f.truncate(1000)
    source = os.path.join(run_copy, "checkpoints", _progress(run_copy)["best_checkpoint"])
    with pytest.raises(RunError, match=rf"checkpoint {source} is intact: copy it over {best}"):
        export_run(run_copy, os.path.join(run_copy, "export"))


def test_export_refuses_a_run_whose_best_loss_is_not_finite(run_copy):
    progress = _progress(run_copy)
    progress["best_val_loss"] = math.nan
    _write_progress(run_copy, progress)
    with pytest.raises(ExportError, match="best validation loss is nan, not a finite number"):
        export_run(run_copy)


def test_nan_loss_stops_training_and_keeps_the_last_good_epoch(run_copy, corpus_slice):
    """A model whose loss turns NaN (here: a NaN put into the resumed weights) stops with a
    message; the run keeps its finished epochs and best weights untouched."""
    progress = _progress(run_copy)
    last = os.path.join(run_copy, "checkpoints", progress["last_checkpoint"])
    with h5py.File(last, "r+") as f:
        kernel = f["layers/dense/vars/0"]
        kernel[0, 0] = np.nan
    progress["last_sha256"] = sha256_file(last)  # a consistent run that then diverges
    _write_progress(run_copy, progress)
    best_before = sha256_file(os.path.join(run_copy, "best.weights.h5"))
    with pytest.raises(RunError, match=r"diverged in epoch 3: the loss became nan.*keeps epoch 2 as its last"):
        train(run_copy, corpus_slice, verbose=0, epochs=4)
    assert _progress(run_copy) == progress
    assert sha256_file(os.path.join(run_copy, "best.weights.h5")) == best_before
    assert sorted(os.listdir(os.path.join(run_copy, "checkpoints"))) == [r["checkpoint"] for r in progress["history"]]


def test_a_run_that_fails_in_its_first_epoch_leaves_nothing_behind(corpus_slice, tmp_path):
    run_dir = str(tmp_path / "run")
    with pytest.raises(RunError, match="diverged in epoch 1.*no epoch finished"):
        train(run_dir, corpus_slice, "tiny", verbose=0, learning_rate=1e38, steps_per_epoch=5)
    assert sorted(os.listdir(run_dir)) == [".lock"]
    state = train(run_dir, corpus_slice, "tiny", verbose=0, epochs=1, steps_per_epoch=5)  # a rerun starts clean
    assert state["epochs_done"] == 1


def test_one_character_corpus_is_refused_before_anything_is_written(tmp_path):
    corpus = tmp_path / "aaa.txt"
    corpus.write_text("a" * 5000, encoding="utf-8")
    with pytest.raises(CorpusError, match=r"aaa\.txt has only one distinct character \('a'\)"):
        train(str(tmp_path / "run"), str(corpus), "tiny", verbose=0)
    assert not os.path.exists(tmp_path / "run" / "config.json")
    assert not os.path.exists(tmp_path / "run" / "vocab.json")


def test_urls_with_the_same_file_name_have_their_own_cache_entries(tmp_path):
    import functools
    import http.server
    import threading

    root = tmp_path / "www"
    for folder, text in (("a", "the first book\n" * 20), ("b", "another text\n" * 20)):
        (root / folder).mkdir(parents=True)
        (root / folder / "book.txt").write_text(text, encoding="utf-8")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        a = load(f"{base}/a/book.txt", cache_dir=str(tmp_path / "cache"))
        b = load(f"{base}/b/book.txt", cache_dir=str(tmp_path / "cache"))
    finally:
        server.shutdown()
        server.server_close()
    assert a.text.startswith("the first book") and b.text.startswith("another text")
    assert a.path != b.path and os.path.basename(b.path).endswith("-book.txt")
