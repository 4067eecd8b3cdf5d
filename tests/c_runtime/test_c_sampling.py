"""estella-c's sampler alone against the Python runtime's Sampler (the one `estella generate` uses),
on the same rows and uniform numbers, including what a trained model rarely gives: ties, -inf,
logits that overflow once scaled by 1/T, NaN, and cuts that keep one character."""

import subprocess

import numpy as np
import pytest

from estella.runtime.sampling import Sampler

V = 74
SETTINGS = [  # temperature, top_k (0: none), top_p (1: none)
    (1.0, 0, 1.0), (0.3, 0, 1.0), (7.0, 0, 1.0), (0.0, 0, 1.0), (1e-30, 0, 1.0), (1e-5, 0, 1.0),
    (1.0, 1, 1.0), (0.8, 5, 1.0), (1.0, 1000, 1.0), (1.0, 0, 0.5), (1.2, 0, 0.9), (1.0, 0, 1e-9),
    (0.9, 10, 0.7), (1.0, 0, 0.99999999), (1.0, V, 1.0), (1.0, V - 1, 1.0), (1e46, 0, 1.0), (1e38, 3, 0.8),
]


class Fixed:
    """An rng that returns the given uniform: the Sampler draws exactly one per character."""

    def __init__(self, u):
        self.u = u

    def random(self):
        return self.u


def rows(seed):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(V) * scale for scale in (0.5, 3, 20) for _ in range(40)]
    out += [np.round(rng.standard_normal(V) * 2) / 2 for _ in range(40)]  # many ties
    for _ in range(10):
        row = rng.standard_normal(V) * 3
        row[rng.integers(0, V, 5)] = -np.inf
        out.append(row)
    out += [rng.standard_normal(V) * 3e37 for _ in range(10)]  # overflow once scaled
    out += [np.full(V, 2.0), np.full(V, -1e30)]
    nan = rng.standard_normal(V)
    nan[7] = np.nan
    out.append(nan)
    return np.array(out, np.float32)


@pytest.mark.parametrize("temperature, top_k, top_p", SETTINGS)
def test_sampler_equals_the_python_runtimes(c_build, temperature, top_k, top_p):
    logits = rows(int(temperature * 1000) + top_k)
    rng = np.random.default_rng(1)
    uniforms = rng.random(len(logits))
    uniforms[:3] = [0.0, np.nextafter(1.0, 0.0), 0.5]
    stdin = b"".join(row.tobytes() + np.float64(u).tobytes() for row, u in zip(logits, uniforms))
    out = subprocess.run([f"{c_build}/sample-check", str(V), repr(temperature), str(top_k), repr(top_p)],
                         input=stdin, capture_output=True, check=True).stdout
    got = np.frombuffer(out, np.int32)
    sampler = Sampler(temperature, top_k or None, None if top_p == 1.0 else top_p)
    with np.errstate(all="ignore"):
        want = np.array([sampler(row, Fixed(u)) for row, u in zip(logits, uniforms)])
    assert len(got) == len(want)
    differ = np.flatnonzero(got != want)
    assert not len(differ), f"{len(differ)} of {len(want)} rows differ, first row {differ[0]}"
