"""Where the text goes: a closed pipe ends quietly, a full disk or an encoding that cannot show the
text is exit 2 with a message, Ctrl-C is exit 130; never a traceback. Real processes, real pipes."""

import array
import fcntl
import os
import signal
import subprocess
import sys
import termios
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ESTELLA = [sys.executable, "-m", "estella.runtime.cli"]
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)  # Linux


def test_a_closed_pipe_ends_quietly(numpy_export):
    """`estella generate --stream ... | head -c 20`: the reader leaves after 20 bytes."""
    for extra in (["--stream"], ["--num-samples", "3"]):
        proc = subprocess.Popen([*ESTELLA, "generate", numpy_export, "--chars", "40000", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
        assert len(proc.stdout.read(20)) == 20
        proc.stdout.close()
        _, err = proc.communicate(timeout=120)
        assert err == b"", err.decode()
        # 128 + SIGPIPE, as a shell reports for `cat`. (One large last write that the pipe took in
        # part is not an error to the OS, so a single text may also end with 0.)
        assert proc.returncode == 141 or (proc.returncode == 0 and "--stream" not in extra), proc.returncode


def test_a_shell_pipeline_into_head(numpy_export):
    cmd = f"{sys.executable} -m estella.runtime.cli generate {numpy_export} --stream --chars 100000 | head -c 20"
    result = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, cwd=REPO, timeout=120)
    assert len(result.stdout) == 20 and result.stderr == b""
    assert result.returncode == 141


@pytest.mark.parametrize("extra", [["--stream"], [], ["--num-samples", "3"]])
def test_a_full_disk_is_exit_2_with_a_message(numpy_export, extra):
    with open("/dev/full", "w") as full:
        result = subprocess.run([*ESTELLA, "generate", numpy_export, "--chars", "50", *extra],
                                stdout=full, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "cannot write the text to standard output: No space left on device" in result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


@pytest.mark.parametrize("extra", [["--stream"], []])
def test_an_encoding_that_cannot_show_the_text_is_exit_2(real_export, extra):
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    result = subprocess.run([*ESTELLA, "generate", real_export, "--prime", "\u201cPip", "--chars", "5", *extra],
                            capture_output=True, text=True, cwd=REPO, timeout=120, env=env, encoding="utf-8")
    assert result.returncode == 2, result.stderr
    assert "standard output's encoding (ascii) cannot show '\\u201c'" in result.stderr
    assert "PYTHONIOENCODING=utf-8" in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_exits_130_without_a_traceback(numpy_export):
    """Ctrl-C while the generator is blocked writing to a full pipe whose reader has stopped reading
    ends it, and it does not block again on its way out. The pipe is watched until it is full, so the
    signal lands in the blocked write on any machine.

    The child takes Ctrl-C as a terminal's foreground job does, even when the suite runs in the
    background (tests/conftest.py): an inherited ignored SIGINT, not the full pipe, is what made this
    test hang for 60 s when the suite ran in the background."""
    proc = subprocess.Popen([*ESTELLA, "generate", numpy_export, "--stream", "--chars", "100000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        assert len(proc.stdout.read(100)) == 100  # it is generating
        wait_until_full(proc.stdout.fileno())
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read()  # stdout is never read again: the pipe stays full
        proc.wait(timeout=300)  # a hang guard only: it ends at once
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err and b"interrupted" in err


def wait_until_full(fd):
    """Return once the pipe holds as many bytes as it can: its writer is blocked (or about to be)."""
    capacity = fcntl.fcntl(fd, F_GETPIPE_SZ)
    for _ in range(100_000):  # a bound in count, as a guard; the pipe fills within a few thousand
        pending = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, pending)
        if pending[0] >= capacity:
            return
        time.sleep(0.001)
    raise AssertionError(f"the pipe never filled ({pending[0]} of {capacity} bytes)")


def test_quiet_by_default_and_the_interpreters_lines_with_verbose(real_export):
    """LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate" only with --verbose."""
    argv = [*ESTELLA, "generate", real_export, "--backend", "tflite", "--chars", "5", "--seed", "1"]
    quiet = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    verbose = subprocess.run([*argv, "--verbose"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert verbose.returncode == 0 and "XNNPACK" in verbose.stderr and "backend: tflite" in verbose.stderr
    assert verbose.stdout == quiet.stdout
