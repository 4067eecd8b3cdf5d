"""Timing that survives a noisy machine: repeated blocks, interleaved, summarised as median/min/max."""

import statistics


def summary(samples):
    """{median, min, max, n, samples} of a list of numbers."""
    samples = [float(s) for s in samples]
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples),
            "n": len(samples), "samples": samples}


def interleaved(cases, repeats, block_seconds=0.2):
    """Run every case once per round, `repeats` rounds, so that load on the machine hits all alike.

    cases: {name: fn}, where fn(n) runs a block of n iterations and returns (seconds, units), units
    being what a rate is per (characters, steps). n is fitted once per case so that a block takes
    about block_seconds. Returns {name: summary of seconds per unit}.
    """
    sizes = {}
    for name, fn in cases.items():
        fn(1)  # warm-up: tracing, allocation, caches
        pilot_n = 3
        seconds, _ = fn(pilot_n)
        sizes[name] = max(1, min(20000, round(block_seconds * pilot_n / max(seconds, 1e-9))))
    per_unit = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            seconds, units = fn(sizes[name])
            per_unit[name].append(seconds / units)
    return {name: summary(values) for name, values in per_unit.items()}


def scaled(s, factor):
    """A summary with every number multiplied (seconds -> microseconds)."""
    return {**s, **{k: s[k] * factor for k in ("median", "min", "max")},
            "samples": [v * factor for v in s["samples"]]}


def inverted(s, factor=1.0):
    """A rate from a summary of times: factor / x for every number, so min and max swap, and the
    median is factor / median (the median of the inverses differs when n is even)."""
    return {**summary([factor / v for v in s["samples"]]), "median": factor / s["median"]}


def ratio(a, b):
    """Median of a over median of b, both measured in the same run."""
    return a["median"] / b["median"] if b["median"] else float("nan")
