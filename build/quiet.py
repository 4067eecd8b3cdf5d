"""TensorFlow writes absl and oneDNN lines to stderr while it is imported, before any Python-level
setting can reach its C++ logger (TF_CPP_MIN_LOG_LEVEL does not cover them). Training commands
import it with stderr pointed at /dev/null unless --verbose, so a user sees estella's own lines."""

import contextlib
import os
import sys


@contextlib.contextmanager
def stderr_silenced(enabled=True):
    """Point file descriptor 2 at /dev/null for the block (C++ libraries write there directly)."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow(verbose=False):
    """Import Keras (and TensorFlow under it) without its start-up lines unless `verbose`.
    An import that fails raises as usual, after stderr is back."""
    with stderr_silenced(not verbose):
        import keras  # noqa: F401
