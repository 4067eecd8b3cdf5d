"""Libraries' start-up chatter kept off the user's terminal unless asked for (--verbose).

LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from C++ on every
interpreter it makes, and TensorFlow's absl logging prints its oneDNN and CPU-feature lines before
TF_CPP_MIN_LOG_LEVEL is read; neither has a knob that reaches them. So while such a library starts,
file descriptor 2 itself points at a temporary file; afterwards it is restored and what was written
is passed on to stderr, less the lines known to be noise. Nothing else is lost: a warning or an error
from the library still reaches the user, only later.
"""

import contextlib
import os
import re
import sys
import tempfile

NOISE = re.compile(
    rb"^(INFO: Created TensorFlow Lite XNNPACK delegate"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IW]\d{4} [\d:.]+ +\d+ \S+\] "  # absl INFO and WARNING lines
    rb"|To enable the following instructions: "  # the second line of the CPU-feature notice
    rb"|E\d{4} [^\]]*\] oneDNN supports"
    rb"|fully_quantize: \d"  # the TFLite converter's calibration summary
    rb"|WARNING:root:Please consider to run pre-processing before quantization)")

_show = False


def show_library_logs(show=True):
    """--verbose: pass everything the libraries print through unfiltered."""
    global _show
    _show = show


@contextlib.contextmanager
def library_logs_filtered():
    """Within the block, what anything writes to fd 2 is held back, then written less the noise."""
    if _show:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 (closed, or a test's captured stderr)
        yield
        return
    held = tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        held.seek(0)
        kept = [line for line in held.read().splitlines(keepends=True) if not NOISE.match(line)]
        held.close()
        if kept:
            with contextlib.suppress(OSError):
                os.write(2, b"".join(kept))
