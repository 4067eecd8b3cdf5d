"""A full disk during train, export and prepare: exit 2 with "no space left on the device while
writing ...", no traceback, finished work kept, and a resumed run equal to one never interrupted.

The disk is a real small tmpfs where this process may mount one (root); everywhere, the same writes
also fail under a file-size limit (RLIMIT_FSIZE, which makes writes fail with EFBIG: Python ignores
SIGXFSZ). The trainer is stopped at a named point (ESTELLA_TEST_KILL_AT=...:SIGSTOP) and the disk
filled while it waits, so nothing depends on timing."""

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tensorflow
TRAIN = ("--preset", "tiny", "--epochs", "3", "--steps-per-epoch", "3", "--validation-steps", "2")
WAYS = ("tmpfs", "file-size limit")


def _cli(*args):
    return [sys.executable, "-m", "estella.runtime.cli", *args]


@contextlib.contextmanager
def small_disk(path, size):
    """A tmpfs of `size` mounted at path, unmounted after; None where mounting is not allowed."""
    os.makedirs(path)
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                                                   capture_output=True).returncode == 0
    try:
        yield path if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", path], check=True)


def _fill(folder):
    """Write a file until the disk refuses another byte; returns its path."""
    path = os.path.join(folder, "filler")
    with open(path, "wb", buffering=0) as f:
        for block in (1 << 16, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * block)
    return path


def _limit_file_size(limit):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _no_traceback(err):
    assert "Traceback" not in err and "Segmentation" not in err and "core dumped" not in err, err[-3000:]


@pytest.fixture(scope="module")
def straight_run(corpus_slice, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("straight") / "run")
    result = subprocess.run(_cli("train", run_dir, "--corpus", corpus_slice, *TRAIN), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(run_dir, "state.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("way", WAYS)
def test_a_full_disk_in_epoch_2_keeps_epoch_1_and_the_resumed_run_is_exact(way, corpus_slice, tmp_path,
                                                                           request):
    with small_disk(str(tmp_path / "disk"), "16m") as disk:
        if way == "tmpfs" and disk is None:
            pytest.skip("mounting a tmpfs needs root here; the file-size limit case runs the same writes")
        run_dir = os.path.join(disk or str(tmp_path / "disk"), "run")
        cmd = _cli("train", run_dir, "--corpus", corpus_slice, *TRAIN)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, ESTELLA_TEST_KILL_AT="epoch-2-begin:SIGSTOP"))
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        filler = _fill(disk) if way == "tmpfs" else None
        if way != "tmpfs":
            resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (4096, 4096))  # a checkpoint is larger
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 2, err[-3000:]
        assert "no space left on the device while writing" in err and "epoch 2 was not saved" in err
        assert f"{run_dir} keeps epoch 1" in err
        _no_traceback(err)
        with open(os.path.join(run_dir, "state.json")) as f:
            assert json.load(f)["epochs_done"] == 1
        assert not [n for n in os.listdir(run_dir) if n.startswith(".tmp-")]

        if way != WAYS[0] and disk is not None:
            return  # the resume after a full disk is checked once: on the tmpfs where there is one
        if filler:
            os.unlink(filler)
        straight_run = request.getfixturevalue("straight_run")
        resumed = subprocess.run(cmd, capture_output=True, text=True)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        with open(os.path.join(run_dir, "state.json")) as f:
            progress = json.load(f)
    straight = [(r["loss"], r["val_loss"]) for r in straight_run["history"]]
    assert [(r["loss"], r["val_loss"]) for r in progress["history"]] == straight


@pytest.mark.parametrize("way", WAYS)
def test_a_full_disk_during_prepare_replaces_nothing(way, corpus_slice, tmp_path):
    with small_disk(str(tmp_path / "disk"), "32k") as disk:
        if way == "tmpfs" and disk is None:
            pytest.skip("mounting a tmpfs needs root here; the file-size limit case runs the same writes")
        out = os.path.join(disk or str(tmp_path / "disk"), "data")
        result = subprocess.run(_cli("prepare", corpus_slice, "--out", out), capture_output=True, text=True,
                                preexec_fn=None if way == "tmpfs" else _limit_file_size(16384))
        assert result.returncode == 2, result.stderr[-3000:]
        assert "no space left on the device while writing" in result.stderr and "nothing was replaced" in result.stderr
        _no_traceback(result.stderr)
        assert os.listdir(os.path.dirname(out)) == []  # no --out, no temp folder


@pytest.mark.parametrize("way", WAYS)
def test_a_full_disk_during_export_replaces_nothing(way, tiny_run, tmp_path):
    with small_disk(str(tmp_path / "disk"), "256k") as disk:
        if way == "tmpfs" and disk is None:
            pytest.skip("mounting a tmpfs needs root here; the file-size limit case runs the same writes")
        out = os.path.join(disk or str(tmp_path / "disk"), "export")
        result = subprocess.run(_cli("export", tiny_run, "--out", out), capture_output=True, text=True,
                                preexec_fn=None if way == "tmpfs" else _limit_file_size(16384))
        assert result.returncode == 2, result.stderr[-3000:]
        assert "no space left on the device while writing" in result.stderr and "nothing was replaced" in result.stderr
        _no_traceback(result.stderr)
        assert os.listdir(os.path.dirname(out)) == []
    shutil.rmtree(tmp_path / "disk", ignore_errors=True)


def test_the_room_checked_before_a_checkpoint_is_at_least_its_size(tiny_run):
    from estella.build.config import load_config
    from estella.build.train import checkpoint_bytes, read_progress, restore_model

    progress = read_progress(tiny_run)
    model = restore_model(tiny_run, progress, load_config(tiny_run)["hparams"], load_config(tiny_run)["vocab_size"])
    size = os.path.getsize(os.path.join(tiny_run, "checkpoints", progress["last_checkpoint"]))
    assert size <= checkpoint_bytes(model) <= size + 16384 * 40 + (1 << 20)
