"""`estella prepare` never deletes what it did not write, never hangs on odd folders, cleans up after
killed runs, and a prepared folder that changes under a trainer is refused or caught.

Processes stop at named points (ESTELLA_TEST_KILL_AT, build/fileio.py) and the tests wait for that
with waitpid, never for a time."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from estella.build.errors import CorpusError
from estella.build.memmap_data import open_prepared
from estella.build.prepare import content_sha256, prepare, reading_lock

pytestmark = pytest.mark.tensorflow
QUIET = {"log": lambda *_: None}


def _cli(*args):
    return [sys.executable, "-m", "estella.runtime.cli", *args]


def _stopped_at(stage, *args):
    """A CLI command stopped (SIGSTOP) at `stage`; returns the Popen once the kernel reports it stopped."""
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, ESTELLA_TEST_KILL_AT=f"{stage}:SIGSTOP"))
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), "the command ended before it reached " + stage
    return proc


def _finish(proc):
    os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def test_a_folder_made_at_out_while_preparing_is_left_alone(shelf, tmp_path):
    out = tmp_path / "data"
    proc = _stopped_at("prepare-written", "prepare", shelf, "--out", str(out))
    out.mkdir()
    (out / "mine.txt").write_text("the user's\n")
    code, _, err = _finish(proc)
    assert code == 2 and "appeared while preparing; nothing was replaced" in err and "Traceback" not in err
    assert os.listdir(out) == ["mine.txt"] and (out / "mine.txt").read_text() == "the user's\n"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-prepare-")]


def test_force_refuses_a_prepared_folder_that_gained_a_file_while_preparing(shelf, tmp_path):
    out = tmp_path / "data"
    prepare([shelf], str(out), **QUIET)
    proc = _stopped_at("prepare-written", "prepare", shelf, "--out", str(out), "--force")
    (out / "mine.txt").write_text("the user's\n")
    code, _, err = _finish(proc)
    assert code == 2 and "not a prepared data folder (it holds ['mine.txt'])" in err, err[-2000:]
    assert (out / "mine.txt").read_text() == "the user's\n" and (out / "meta.json").exists()


def test_force_refuses_a_folder_a_trainer_reads(shelf, tmp_path):
    out = str(tmp_path / "data")
    prepare([shelf], out, **QUIET)
    before = content_sha256(out)
    with reading_lock(out):  # as `estella train --data` holds it
        with pytest.raises(CorpusError, match="is being read by a training run"):
            prepare([shelf], out, force=True, validation_fraction=0.2, **QUIET)
    assert content_sha256(out) == before
    prepare([shelf], out, force=True, validation_fraction=0.2, **QUIET)  # once the trainer is gone
    assert content_sha256(out) != before


def test_a_folder_prepared_again_under_a_running_trainer_stops_it(shelf, tmp_path):
    """Replaced by hand (no lock can stop that): the trainer notices at the epoch's end, saves nothing
    of that epoch and exits 2."""
    data, other, run_dir = str(tmp_path / "data"), str(tmp_path / "other"), str(tmp_path / "run")
    prepare([shelf], data, **QUIET)
    prepare([shelf], other, validation_fraction=0.2, **QUIET)  # same characters, other ids
    proc = _stopped_at("epoch-2-begin", "train", run_dir, "--preset", "tiny", "--data", data, "--epochs", "3",
                       "--steps-per-epoch", "3", "--validation-steps", "2")
    shutil.rmtree(data)
    os.rename(other, data)
    code, _, err = _finish(proc)
    assert code == 2, err[-2000:]
    assert "changed while training read it" in err and "epoch 2 was not saved and the run keeps epoch 1" in err
    assert "Traceback" not in err
    with open(os.path.join(run_dir, "state.json")) as f:
        assert json.load(f)["epochs_done"] == 1


def test_links_fifos_and_odd_names_neither_hang_nor_count_twice(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "a.txt").write_text("the first book, plain text\n" * 400, encoding="utf-8")
    (books / "b.txt").write_text("another book entirely\n" * 400, encoding="utf-8")
    os.symlink(".", books / "loop")  # two links back to the folder: glob would walk them forever
    os.symlink("..", books / "up")
    os.symlink("a.txt", books / "alias.txt")  # the same file through a second name, twice
    os.link(books / "a.txt", books / "hard.txt")
    os.mkfifo(books / "pipe.txt")  # opening it would block
    (books / "folder.txt").mkdir()
    os.symlink("missing", books / "gone.txt")
    for source in (str(books), str(books / "**" / "*.txt")):
        out = tmp_path / f"data-{len(source)}"
        result = subprocess.run(_cli("prepare", source, "--out", str(out)), capture_output=True, text=True,
                                timeout=300)  # a hang fails here instead of stopping the suite
        assert result.returncode == 0, result.stderr[-2000:]
        with open(out / "meta.json") as f:
            sources = json.load(f)["sources"]
        assert sorted(os.path.basename(s["path"]) for s in sources) == ["a.txt", "b.txt"]
        for name, why in (("pipe.txt", "a FIFO"), ("gone.txt", "a dangling link")):
            assert f"skipping {books / name}: it is {why}" in result.stdout
    fifo = subprocess.run(_cli("prepare", str(books / "pipe.txt"), "--out", str(tmp_path / "x")),
                          capture_output=True, text=True, timeout=300)
    assert fifo.returncode == 2 and "pipe.txt is a FIFO" in fifo.stderr and "Traceback" not in fifo.stderr


def test_a_killed_prepare_leaves_a_temp_folder_the_next_one_removes(shelf, tmp_path):
    killed = subprocess.run(_cli("prepare", shelf, "--out", str(tmp_path / "data")), capture_output=True, text=True,
                            env=dict(os.environ, ESTELLA_TEST_KILL_AT="prepare-written"))
    assert killed.returncode == -9
    left = [n for n in os.listdir(tmp_path) if n.startswith(".tmp-prepare-")]
    assert len(left) == 1 and not (tmp_path / "data").exists()
    mine = tmp_path / f".tmp-prepare-{os.getpid()}-running"  # a live process's: kept
    mine.mkdir()
    prepare([shelf], str(tmp_path / "data"), **QUIET)
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".tmp-")) == [mine.name]


@pytest.mark.parametrize("damage, message", [
    ("id", "train.bin holds the id 255, outside its"),
    ("bytes", "content_sha256 differs"),
    ("sources", "sources is not a list"),
    ("validation_fraction", "validation_fraction is None"),
    ("vocab", 'has no "chars" list'),
])
def test_damaged_prepared_data_is_named(shelf, tmp_path, damage, message):
    data = str(tmp_path / "data")
    prepare([shelf], data, **QUIET)
    meta_path = os.path.join(data, "meta.json")
    with open(meta_path) as f:
        meta = json.load(f)
    if damage in ("id", "bytes"):
        with open(os.path.join(data, "train.bin"), "r+b") as f:
            f.seek(100)
            f.write(b"\xff")
        if damage == "id":  # a consistent hash: only the id check can tell
            meta["content_sha256"] = content_sha256(data)
    elif damage == "vocab":
        with open(os.path.join(data, "vocab.json"), "w") as f:
            f.write('{"chars": null}')
    else:
        del meta[damage]
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    with pytest.raises(CorpusError, match=message):
        open_prepared(data)


def test_damaged_prepared_data_exits_2_from_train(shelf, tmp_path):
    data = str(tmp_path / "data")
    prepare([shelf], data, **QUIET)
    with open(os.path.join(data, "meta.json")) as f:
        meta = json.load(f)
    del meta["sources"]
    with open(os.path.join(data, "meta.json"), "w") as f:
        json.dump(meta, f)
    result = subprocess.run(_cli("train", str(tmp_path / "run"), "--preset", "tiny", "--data", data),
                            capture_output=True, text=True)
    assert result.returncode == 2 and "sources is not a list" in result.stderr and "Traceback" not in result.stderr
    assert sorted(os.listdir(tmp_path / "run")) == [".lock"]



def test_an_out_that_cannot_be_written_is_named(shelf, tmp_path):
    (tmp_path / "file").write_text("not a folder\n")
    result = subprocess.run(_cli("prepare", shelf, "--out", str(tmp_path / "file" / "data")), capture_output=True,
                            text=True)
    assert result.returncode == 2 and f"cannot write --out {tmp_path / 'file' / 'data'}" in result.stderr
    assert "Traceback" not in result.stderr
