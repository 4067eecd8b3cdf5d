"""The C runtime (runtime/c, estella-c) beside the Python runtime on the same float32 TFLite file:
binary size, cold start (process start to the first generated character), characters per second,
and peak RSS (VmHWM), one fresh process per run, in interleaved rounds.

Both sides sample (temperature 1, seed 0) from the prime "T". The Python side is `estella generate
--backend tflite --threads 1 --stats` for chars/s and estella.bench.probe for cold start and memory;
the C side is one `estella-c --stream --stats` process for all three. estella-c is built here with
`make -C runtime/c` against this virtualenv's libLiteRt.so. It runs on one thread, as the Python side
does here: the compiled model's default (LiteRT 2.3's C library does not export its thread option).
"""

import os
import re
import subprocess
import sys
import time

from .models import CACHE, REPO
from .stats import summary

STATS = re.compile(r"([\d.]+) chars/s.*?(?:peak RSS ([\d.]+) MiB)?$")


def build(log=print):
    """estella-c built into .cache/bench/c-runtime; returns (binary, libLiteRt.so)."""
    import ai_edge_litert

    litert = os.path.dirname(ai_edge_litert.__file__)
    build_dir = os.path.join(CACHE, "c-runtime")
    log(f"  building estella-c into {build_dir}")
    subprocess.run(["make", "-s", "-C", os.path.join(REPO, "runtime", "c"), f"BUILD={build_dir}",
                    f"LITERT_DIR={litert}", os.path.join(build_dir, "estella-c")], check=True, capture_output=True)
    return os.path.join(build_dir, "estella-c"), os.path.join(litert, "libLiteRt.so")


def stats_of(stderr, what):
    for line in stderr.splitlines():
        m = STATS.search(line)
        if m:
            return float(m.group(1)), float(m.group(2)) if m.group(2) else None
    raise RuntimeError(f"{what} printed no --stats line:\n{stderr[-2000:]}")


def run_c(binary, export_dir, chars, env):
    """(cold start s, chars/s, peak RSS MiB) of one estella-c process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([binary, export_dir, "--prime", "T", "--no-echo", "--stream", "--chars", str(chars),
                             "--seed", "0", "--stats"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.read(1)
    first = time.perf_counter() - t0
    proc.stdout.read()
    err = proc.stderr.read().decode()
    if proc.wait() != 0:
        raise RuntimeError(f"estella-c failed:\n{err[-2000:]}")
    rate, rss = stats_of(err, "estella-c")
    return first, rate, rss


def run_python(export_dir, chars, env):
    """(cold start s, chars/s, peak RSS MiB) of the Python runtime: the probe, then the CLI's --stats."""
    from .processes import run_probe

    first, rss = run_probe("tflite", "float32", export_dir, chars, 1, env)
    done = subprocess.run([sys.executable, "-m", "estella.runtime.cli", "generate", export_dir, "--backend", "tflite",
                           "--threads", "1", "--prime", "T", "--no-echo", "--chars", str(chars), "--seed", "0",
                           "--stats"], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"estella generate failed:\n{done.stderr[-2000:]}")
    return first, stats_of(done.stderr, "estella generate")[0], rss


def measure(exports, repeats, chars, env=None, log=print):
    """exports: {shape name: export dir}. Returns {shape name: {"estella-c": ..., "python": ...}, "sizes": ...}."""
    env = dict(env or os.environ)
    binary, litert = build(log)
    out = {"sizes": {"estella_c_bytes": os.path.getsize(binary), "libLiteRt_bytes": os.path.getsize(litert)},
           "chars": chars}
    for name, export_dir in exports.items():
        samples = {side: {"cold_start_s": [], "chars_per_s": [], "peak_rss_mib": []} for side in ("estella-c", "python")}
        for r in range(repeats):
            for side, fn in (("estella-c", lambda: run_c(binary, export_dir, chars, env)),
                             ("python", lambda: run_python(export_dir, chars, env))):
                first, rate, rss = fn()
                samples[side]["cold_start_s"].append(first)
                samples[side]["chars_per_s"].append(rate)
                samples[side]["peak_rss_mib"].append(rss)
            log(f"  c runtime, {name}: round {r + 1}/{repeats}")
        out[name] = {side: {k: summary(v) for k, v in s.items()} for side, s in samples.items()}
    return out
