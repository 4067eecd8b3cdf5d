"""Atomic file writes: a temp file beside the target, then a rename, so readers never see half a file."""

import contextlib
import json
import os
import signal
import tempfile

# Tests only: ESTELLA_TEST_KILL_AT=STAGE[:SIGNAL] makes the process send itself SIGNAL (default
# SIGKILL) when it reaches kill_point(STAGE), so a test stops a command at an exact point without
# depending on timing. The stages are the kill_point calls (grep for them).
KILL_AT = "ESTELLA_TEST_KILL_AT"


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temp path in the target's folder; rename it onto `path` only if the block succeeds.

    The temp name keeps the target's suffix, because Keras insists on `.weights.h5` and `.keras`.
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + name, dir=folder)
    os.close(fd)
    os.unlink(tmp)  # Keras refuses to overwrite without asking; let it create the file
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: str, data: bytes):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: str, obj):
    write_atomic(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def kill_point(stage: str):
    """Send this process the signal ESTELLA_TEST_KILL_AT names if it names `stage` (tests only)."""
    wanted = os.environ.get(KILL_AT)
    if not wanted:
        return
    name, _, sig = wanted.partition(":")
    if name == stage:
        os.kill(os.getpid(), getattr(signal, sig or "SIGKILL"))
