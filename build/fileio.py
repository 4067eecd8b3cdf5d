"""Atomic file writes: a temp file beside the target, then a rename, so readers never see half a file."""

import contextlib
import errno
import json
import os
import shutil
import signal
import tempfile

# Tests only: ESTELLA_TEST_KILL_AT=STAGE[:SIGNAL] makes the process send itself SIGNAL (default
# SIGKILL) when it reaches kill_point(STAGE), so a test stops a command at an exact point without
# depending on timing. The stages are the kill_point calls (grep for them).
KILL_AT = "ESTELLA_TEST_KILL_AT"


@contextlib.contextmanager
def atomic_path(path: str, prefix: str = ".tmp-"):
    """Yield a temp path in the target's folder; rename it onto `path` only if the block succeeds.

    The temp name keeps the target's suffix, because Keras insists on `.weights.h5` and `.keras`.
    """
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix="-" + name, dir=folder)
    os.close(fd)
    os.unlink(tmp)  # Keras refuses to overwrite without asking; let it create the file
    try:
        yield tmp
        fsync_path(tmp)  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
        fsync_path(folder)  # and the rename itself survives a power cut
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fsync_path(path: str):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str, data: bytes):
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


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


# A write that failed for want of room: ENOSPC (device full), EDQUOT (quota), EFBIG (file size limit).
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_no_space(error: BaseException) -> bool:
    """True for an OSError of a full disk; h5py reports one without errno, only in its message."""
    if isinstance(error, OSError) and error.errno in NO_SPACE:
        return True
    text = str(error)
    return isinstance(error, (OSError, RuntimeError)) and any(
        marker in text for marker in ("No space left on device", "File too large", "Disk quota exceeded",
                                      "errno = 28", "errno = 27", "errno = 122"))


def describe_os_error(error: OSError, path=None) -> str:
    """A short reason for a failed write: "no space left on the device while writing PATH" for a full disk."""
    where = getattr(error, "filename", None) or path
    if is_no_space(error):
        return f"no space left on the device while writing {where}"
    return f"{error.strerror or error} ({where})" if where else str(error.strerror or error)


def temp_prefix(base: str) -> str:
    """base + this process's id + "-": a temp name whose owner remove_dead_temps can tell."""
    return f"{base}{os.getpid()}-"


def remove_dead_temps(folder: str, base: str):
    """Remove files and folders named base + PID + "-..." in `folder` whose process is gone: what a
    killed command left. Those of running processes (this one included) are kept."""
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        pid = name[len(base):].split("-", 1)[0]
        if not (name.startswith(base) and pid.isdigit()) or process_alive(int(pid)):
            continue
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def check_room(target: str, nbytes: int):
    """Raise OSError (ENOSPC, or EFBIG under a file-size limit) naming `target` unless `nbytes` fit in
    its folder now. For writers that do not fail cleanly: h5py, its write failing mid-file, can crash
    the process in its clean-up instead of raising. The space is taken and given back at once."""
    fd, probe = tempfile.mkstemp(prefix=".tmp-room-", dir=os.path.dirname(os.path.abspath(target)))
    try:
        os.posix_fallocate(fd, 0, max(nbytes, 1))
    except OSError as e:
        raise OSError(e.errno, e.strerror, target) from None
    finally:
        os.close(fd)
        os.unlink(probe)
