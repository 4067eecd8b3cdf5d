"""One writer per run directory: `estella train` holds an exclusive lock on RUN/.lock for the whole
run, readers (`estella export`) a shared one, so two trainers never mix one run's files and an
export never reads a run mid-epoch.

    with exclusive(run_dir):   # raises RunLocked at once if anyone else holds it
        ...train...
    with shared(run_dir):      # raises RunLocked at once if a trainer holds it
        ...read...

fcntl.flock locks belong to the open file, so the kernel drops them when the holder exits, even
on SIGKILL: a crashed trainer never leaves a stale lock. The lock file is never deleted (deleting
it while another process waits on it would let two holders in); it holds the trainer's pid.
"""

import contextlib
import errno
import fcntl
import os

from .errors import RunError

LOCK_FILE = ".lock"


class RunLocked(RunError):
    """Another process holds the run directory's lock."""


@contextlib.contextmanager
def exclusive(run_dir):
    """Hold the run's exclusive (writer) lock; the run directory is created if it is missing."""
    path = os.path.join(run_dir, LOCK_FILE)
    try:
        os.makedirs(run_dir, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunError(f"cannot write the run directory {run_dir}: {e.strerror} ({e.filename}); "
                       "choose a writable run directory") from None
    try:
        _lock(fd, fcntl.LOCK_EX, run_dir)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # the pid is only ever read while its owner holds the lock
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def shared(run_dir):
    """Hold the run's shared (reader) lock. A run on a read-only disk has no trainer to wait for."""
    path = os.path.join(run_dir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT):
            raise
        try:
            fd = os.open(path, os.O_RDONLY)  # flock works on a read-only descriptor too
        except OSError:
            yield  # no lock file and none can be made: no trainer can be writing here
            return
    try:
        _lock(fd, fcntl.LOCK_SH, run_dir)
        yield
    finally:
        os.close(fd)


def _lock(fd, kind, run_dir):
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RunLocked(f"{run_dir} is in use: {_holder(fd)}; wait for it to finish "
                        "(or train into another run directory)") from None


def _holder(fd) -> str:
    pid = os.pread(fd, 32, 0).decode(errors="replace").strip()
    if pid.isdigit():
        return f"estella train (pid {pid}) is writing it"
    return "another estella process holds it (an export reading it, or a trainer starting)"  # readers leave no pid
