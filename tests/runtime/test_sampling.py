"""The shared sampler: greedy, temperature, top-k, top-p, seeds, and its refusals."""

import math

import numpy as np
import pytest

from estella.runtime.sampling import Sampler, SamplingError, check_seed

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
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 2.5}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": math.nan}, "top_p"),
    ({"top_k": 2**63}, "top_k"),
    ({"top_k": True}, "top_k"),
])
def test_bad_settings_are_refused(settings, flag):
    """The error carries the field it is about; its message names the field as the Python API does."""
    with pytest.raises(SamplingError, match=f"^{flag} must") as e:
        Sampler(**settings)
    assert e.value.field == flag and e.value.worded(lambda f: "--x").startswith("--x must")


def test_top_k_past_the_vocabulary_keeps_every_character():
    """Any k at or above the vocabulary size is the same draw as no top_k (int64's largest too)."""
    for k in (len(LOGITS), len(LOGITS) + 1, 2**63 - 1):
        assert np.array_equal(draws(Sampler(1.0, top_k=k), 200), draws(Sampler(1.0), 200))


def test_huge_temperature_is_not_greedy():
    """1/T rounds to 0 in float32 for T = 1e300: the draw is all but uniform, not the argmax."""
    assert len(set(draws(Sampler(1e300), 400))) > 1


@pytest.mark.parametrize("seed,streams", [(-1, 1), (2**63, 1), (2**64, 1), (2**63 - 1, 2), (True, 1), (1.5, 1)])
def test_seeds_out_of_range_are_refused(seed, streams):
    with pytest.raises(SamplingError, match="^seed must be an integer from 0 to") as e:
        check_seed(seed, streams)
    assert e.value.field == "seed"
    assert check_seed(2**63 - streams, streams) == 2**63 - streams


def reference_draw(logits, rng, temperature, top_k=None, top_p=None):
    """The per-stream sampler as first written (row by row; top_p = 1 now counts as no cut), kept
    here as the specification that the vectorised sampler must reproduce id for id."""
    if temperature == 0:
        return int(logits.argmax())
    x = logits * np.float32(1 / temperature)
    x -= x.max()
    if top_k is None and (top_p is None or top_p >= 1):
        cdf = np.exp(x).cumsum()
        return int(cdf.searchsorted(rng.random() * cdf[-1], side="right"))
    order = x.argsort(kind="stable")[::-1][:top_k]
    cdf = np.exp(x[order]).cumsum()
    if top_p is not None and top_p < 1:
        cdf = cdf[:cdf.searchsorted(top_p * cdf[-1]) + 1]
    return int(order[cdf.searchsorted(rng.random() * cdf[-1], side="right")])


SETTINGS = [(0.0, None, None), (1.0, None, None), (0.5, None, None), (0.8, None, 0.95), (1.3, 5, None),
            (0.7, 10, 0.9), (2.0, 1, None), (1.0, None, 1.0), (0.9, 200, 0.5)]


def test_batched_sampling_gives_the_ids_of_the_row_by_row_sampler():
    """Many streams, each with its own settings and seed, drawn together for 300 characters: every
    stream's ids equal what the row-by-row specification draws for it alone."""
    from estella.runtime.sampling import BatchSampler

    rng = np.random.default_rng(0)
    settings = SETTINGS * 4
    batch = BatchSampler(settings)
    rngs = [np.random.default_rng(100 + b) for b in range(len(settings))]
    alone = [np.random.default_rng(100 + b) for b in range(len(settings))]
    for _ in range(300):
        logits = (rng.standard_normal((len(settings), 84)) * 3).astype(np.float32)
        ids = batch(logits, rngs)
        expected = [reference_draw(logits[b], alone[b], *settings[b]) for b in range(len(settings))]
        assert ids.tolist() == expected


def test_one_stream_sampler_is_the_batch_sampler():
    from estella.runtime.sampling import BatchSampler

    logits = (np.random.default_rng(1).standard_normal((50, 30)) * 2).astype(np.float32)
    for settings in SETTINGS:
        single = Sampler(*settings)
        a, b = np.random.default_rng(5), np.random.default_rng(5)
        batch = BatchSampler([settings])
        assert [single(row, a) for row in logits] == [int(batch(row[None], [b])[0]) for row in logits]


@pytest.mark.parametrize("temperature", [1e-38, 1e-45, 5e-324, 1e-30])
def test_tiny_temperatures_are_greedy_not_nan(temperature):
    """1/T overflows float32 for these: the draw is the argmax, never an index past the vocabulary."""
    logits = np.array([0.5, 3.0, -1.0, 2.9], np.float32)
    assert set(draws(Sampler(temperature), 50, logits=logits)) == {1}
    assert set(draws(Sampler(temperature, top_k=2, top_p=0.5), 50, logits=logits)) == {1}


def test_infinite_temperature_is_refused():
    with pytest.raises(SamplingError, match="^temperature must"):
        Sampler(math.inf)
