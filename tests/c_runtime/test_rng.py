"""The C runtime's random numbers and exp, alone, against numpy's own on this machine."""

import subprocess

import numpy as np
import pytest

SEEDS = [*range(0, 300), 2**31 - 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**64 + 1, 2**127 + 12345, 10**40 + 7]


def c_uniforms(c_build, seed, n):
    out = subprocess.run([f"{c_build}/rng-check", str(seed), str(n)], capture_output=True, text=True, check=True)
    return np.array([float.fromhex(line) for line in out.stdout.split()])


@pytest.mark.parametrize("seeds", [SEEDS[:150], SEEDS[150:]], ids=["small", "large"])
def test_random_equals_numpy_default_rng(c_build, seeds):
    for seed in seeds:
        n = 2000 if seed < 20 else 50
        want = np.random.default_rng(seed).random(n)
        assert np.array_equal(c_uniforms(c_build, seed, n), want), f"seed {seed}"


def test_a_bad_seed_is_refused(c_build):
    done = subprocess.run([f"{c_build}/rng-check", "12x", "3"], capture_output=True, text=True)
    assert done.returncode == 2 and "SEED must be a decimal integer" in done.stderr


def test_exp_equals_numpy_float32_exp(c_build):
    """Every value a sampled row can take after max subtraction (<= 0), down past float32's
    denormals, stepped through the bit patterns, plus the special values."""
    bits = np.arange(0x80000000, 0xC2F00000, 211, dtype=np.uint64).astype(np.uint32)
    special = np.array([0, 1e-8, 0.5, 10, 88.72283935546875, 88.8, -103.97208404541015625, -104, -np.inf,
                        np.inf, np.nan], np.float32)
    x = np.concatenate([bits.view(np.float32), special])
    out = subprocess.run([f"{c_build}/exp-check"], input=x.tobytes(), capture_output=True, check=True).stdout
    got = np.frombuffer(out, np.float32)
    with np.errstate(over="ignore"):
        want = np.exp(x)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all(), f"{(~same).sum()} of {len(x)} differ, first at x={x[~same][0]!r}"
