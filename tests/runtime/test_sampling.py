"""The shared sampler: greedy, temperature, top-k, top-p, seeds, and its refusals."""

import math

import numpy as np
import pytest

from estella.runtime.sampling import Sampler, SamplingError

LOGITS = np.array([2.0, 1.0, 0.5, 0.0, -1.0, 3.0, -2.0, 1.5], np.float32)


def draws(sampler, n=4000, seed=0, logits=LOGITS):
    rng = np.random.default_rng(seed)
    return np.array([sampler(logits, rng) for _ in range(n)])


def test_temperature_zero_is_argmax():
    assert set(draws(Sampler(0.0), 50)) == {int(np.argmax(LOGITS))}


def test_the_same_seed_gives_the_same_draws():
    s = Sampler(0.8)
    assert (draws(s, 300, seed=7) == draws(s, 300, seed=7)).all()
    assert (draws(s, 300, seed=7) != draws(s, 300, seed=8)).any()


def test_draws_follow_the_softmax():
    counts = np.bincount(draws(Sampler(1.0), 20000), minlength=len(LOGITS)) / 20000
    p = np.exp(LOGITS - LOGITS.max())
    p /= p.sum()
    assert np.abs(counts - p).max() < 0.02


def test_lower_temperature_sharpens():
    top = int(np.argmax(LOGITS))
    assert (draws(Sampler(0.3)) == top).mean() > (draws(Sampler(1.0)) == top).mean() + 0.2


def test_top_k_keeps_only_the_k_likeliest():
    kept = set(draws(Sampler(5.0, top_k=3)))  # a high temperature would reach every character otherwise
    assert kept == set(np.argsort(-LOGITS)[:3].tolist())
    assert set(draws(Sampler(1.0, top_k=1), 50)) == {int(np.argmax(LOGITS))}


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    p = np.exp(LOGITS - LOGITS.max())
    p /= p.sum()
    order = np.argsort(-p)
    need = int(np.searchsorted(np.cumsum(p[order]), 0.8)) + 1
    kept = set(draws(Sampler(1.0, top_p=0.8)))
    assert kept == set(order[:need].tolist())
    assert set(draws(Sampler(1.0, top_p=1e-6), 50)) == {int(order[0])}


def test_top_k_and_top_p_together():
    kept = set(draws(Sampler(5.0, top_k=4, top_p=0.5)))
    assert kept <= set(np.argsort(-LOGITS)[:4].tolist()) and len(kept) >= 1


@pytest.mark.parametrize("settings, flag", [
    ({"temperature": -0.1}, "--temperature"),
    ({"temperature": math.nan}, "--temperature"),
    ({"temperature": "hot"}, "--temperature"),
    ({"top_k": 0}, "--top-k"),
    ({"top_k": 2.5}, "--top-k"),
    ({"top_p": 0.0}, "--top-p"),
    ({"top_p": 1.5}, "--top-p"),
    ({"top_p": math.nan}, "--top-p"),
])
def test_bad_settings_are_refused(settings, flag):
    with pytest.raises(SamplingError, match=flag):
        Sampler(**settings)
