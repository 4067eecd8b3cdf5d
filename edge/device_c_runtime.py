"""The device side of the C runtime's edge row: estella-c against the Python runtime on the same device.

    python device_c_runtime.py EXPORT_DIR ESTELLA_C

Runs in the tflite device virtualenv. For each case, the text of `estella generate EXPORT ...
--backend tflite` (the Generator in this process, on this CPU's LiteRT and numpy) and the text of
estella-c with the same flags must be the same bytes; a few refusals must carry the same message
and exit code 2. The comparison is on the device, not with the host's texts: LiteRT's aarch64
kernels and numpy's aarch64 exp (the C library's, not the x86 AVX kernel) round differently from
x86, and the C runtime follows what the device's Python runtime does. Prints JSON.
"""

import contextlib
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import time

from device_parity import hwcaps, versions

from estella.runtime.cli import main as estella_main
from estella.runtime.generator import Generator

# (flags, chars): greedy, the command, top-k, top-p, and the int8 file
CASES = [
    ({"prime": "Pip", "temperature": 0.0, "seed": 1}, 200),
    ({"prime": "Pip", "temperature": 0.5, "seed": 7}, 500),
    ({"prime": "", "temperature": 1.0, "top_k": 10, "seed": 3}, 200),
    ({"prime": "Pip", "temperature": 0.8, "top_p": 0.9, "seed": 11}, 200),
    ({"prime": "Pip", "temperature": 0.7, "seed": 5, "precision": "int8"}, 200),
]
REFUSALS = [["--temperature", "-1"], ["--top-p", "1.5"], ["--prime", "Pip\u00a7"], ["--chars", "x"]]


def flags(settings, chars):
    out = ["--chars", str(chars)]
    for key, value in settings.items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def python_refusal(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = estella_main(["generate", *argv, "--backend", "tflite"])
        except SystemExit as e:
            code = e.code
    return code, err.getvalue().strip().splitlines()[-1].split(": error: ", 1)[-1]


def main(export, estella_c):
    results, failures = [], []
    generators = {}
    for settings, chars in CASES:
        settings = dict(settings)
        precision = settings.get("precision", "float32")
        if precision not in generators:
            generators[precision] = Generator.load(export, backend="tflite", precision=precision)
        gen_settings = {k: v for k, v in settings.items() if k not in ("prime", "precision")}
        start = time.monotonic()
        want = generators[precision].generate(settings["prime"], chars, **gen_settings) + "\n"
        python_seconds = time.monotonic() - start
        start = time.monotonic()
        done = subprocess.run([estella_c, export, *flags(settings, chars)], capture_output=True, text=True,
                              encoding="utf-8")
        c_seconds = time.monotonic() - start
        same = done.returncode == 0 and done.stdout == want
        results.append({"flags": shlex.join(flags(settings, chars)), "equal": same, "chars": chars,
                        "emulated_python_seconds": python_seconds, "emulated_c_seconds": c_seconds})
        if not same:
            prefix = os.path.commonprefix([done.stdout, want])
            failures.append(f"{shlex.join(flags(settings, chars))}: estella-c exited {done.returncode}, texts agree "
                            f"for {len(prefix)} of {len(want)} chars; {done.stderr.strip()[-200:]}")
    for argv in REFUSALS:
        want = python_refusal([export, *argv])
        done = subprocess.run([estella_c, export, *argv], capture_output=True, text=True, encoding="utf-8")
        got = (done.returncode, done.stderr.strip().split(": error: ", 1)[-1])
        results.append({"flags": shlex.join(argv), "equal": got == want, "refusal": True})
        if got != want:
            failures.append(f"{shlex.join(argv)}: estella-c {got!r}, estella generate {want!r}")
    print(json.dumps({
        "row": "estella-c", "machine": platform.machine(), "hwcaps": hwcaps(), "versions": versions(),
        "binary_bytes": os.path.getsize(estella_c), "cases": results, "failures": failures}))


if __name__ == "__main__":
    main(*sys.argv[1:])
