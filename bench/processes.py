"""Cold start (process start to the first generated character) and peak RSS, one process per run."""

import json
import os
import subprocess
import sys
import time

from .stats import summary


def run_probe(backend, precision, path, chars, threads, env):
    """(seconds to the first character, peak RSS in MiB) of one fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "estella.bench.probe", backend, precision, path,
                             str(chars), str(threads)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    first = None
    lines = []
    for line in proc.stdout:
        if line.startswith("FIRST") and first is None:
            first = time.perf_counter() - t0
        lines.append(line)
    err = proc.stderr.read()
    if proc.wait() != 0 or first is None:
        raise RuntimeError(f"probe {backend} {precision} {path} failed:\n{err[-2000:]}")
    return first, json.loads(lines[-1])["peak_rss_kib"] / 1024


def measure(cases, repeats, chars, threads, env=None, log=print):
    """cases: {name: (backend, precision, path)}. Rounds are interleaved, as everywhere else."""
    env = dict(env or os.environ)
    cold = {name: [] for name in cases}
    rss = {name: [] for name in cases}
    for r in range(repeats):
        for name, (backend, precision, path) in cases.items():
            seconds, mib = run_probe(backend, precision, path, chars, threads, env)
            cold[name].append(seconds)
            rss[name].append(mib)
        log(f"  processes: round {r + 1}/{repeats}")
    return {name: {"cold_start_s": summary(cold[name]), "peak_rss_mib": summary(rss[name])} for name in cases}
