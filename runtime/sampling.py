"""The one sampler every backend, the server and the Keras reference share, so a seed gives the same
text whatever ran the model and whatever ran beside it.

temperature 0 is greedy (argmax); otherwise softmax(logits / temperature), cut to the top_k most
likely characters and then to the smallest set of those whose probability (renormalised over the
top_k) reaches top_p, and drawn with one uniform number from the stream's own seeded numpy Generator.
A temperature so small that 1/temperature overflows float32 is greedy too: the softmax is then a
one-hot at the argmax anyway, and scaling by inf would give NaN.

sample_batch does this for B streams at once, each with its own settings, in a few numpy calls over
the [B, V] logits: a server's batch costs one call per character, not B. Sampler is the same code
for one stream, so a stream's ids never depend on which of the two drew them.
"""

import dataclasses
import math
import numbers

import numpy as np

from .errors import SettingError

FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
SAFE_MAGNITUDE = FLOAT32_MAX / 2  # scaled logits below this cannot overflow float32


INT64_MAX = 2**63 - 1


class SamplingError(SettingError):
    """A sampling setting outside what is allowed (field: temperature, top_k, top_p or seed)."""


def check_integer(field, value, low, high=INT64_MAX, error=SettingError, what=None):
    """value as an int in [low, high] (bools refused); else error(field, rule, value)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise error(field, what or (f"must be an integer >= {low}" if high == INT64_MAX
                                    else f"must be an integer from {low} to {high}"), value)
    return int(value)


def check_settings(temperature=1.0, top_k=None, top_p=None):
    if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real)
            or math.isnan(temperature) or temperature < 0 or math.isinf(temperature)):
        raise SamplingError("temperature", "must be a finite number >= 0 (0 picks the likeliest character)",
                            temperature)
    if top_k is not None:
        # Any k at or above the vocabulary size keeps every character: larger values are not refused.
        check_integer("top_k", top_k, 1, error=SamplingError)
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, numbers.Real)
                              or not 0 < top_p <= 1):
        raise SamplingError("top_p", "must be in (0, 1]", top_p)


def check_seed(seed, streams=1):
    """A seed for `streams` streams (seeds seed .. seed + streams - 1), each within int64; or None."""
    if seed is not None:
        check_integer("seed", seed, 0, INT64_MAX - (streams - 1), error=SamplingError,
                      what=f"must be an integer from 0 to {INT64_MAX - (streams - 1)}"
                           + (f" ({streams} streams take seeds seed to seed + {streams - 1})" if streams > 1 else ""))
    return seed


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How one stream's characters are drawn, checked once when made: temperature (0: greedy), top_k
    (None keeps all; any k >= the vocabulary size keeps all too), top_p (None or 1 keeps all)."""
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self):
        check_settings(self.temperature, self.top_k, self.top_p)


def top_k_kept(top_k):
    """The top_k of sample_batch: 0 keeps all. Clamped, so that any integer fits int64 (a k past the
    vocabulary keeps all of it, as sample_batch clamps k to the row's width)."""
    return 0 if top_k is None else min(int(top_k), INT64_MAX)


def inverse_temperature(temperature):
    """float32 1/T, or 0 for greedy: T == 0, or T so small that 1/T does not fit a float32. A T so
    large that 1/T rounds to 0 in float32 takes float32's smallest normal number instead (an all but
    uniform draw, not greedy)."""
    if temperature == 0 or 1 / temperature > FLOAT32_MAX:
        return 0.0
    return float(np.float32(1 / temperature)) or FLOAT32_TINY


def sample_batch(logits, inv_temperature, top_k, top_p, uniforms):
    """ids [B] for logits [B, V] float32, one row per stream.

    inv_temperature [B]: float32 1/T, 0 for greedy. top_k [B]: 0 keeps all. top_p [B]: 1 keeps all.
    uniforms [B]: one draw in [0, 1) per row (ignored for greedy rows).
    It runs once per character for a whole batch, so the common case (every row sampled, no cut)
    takes a handful of numpy calls on the full arrays, with no gathers.
    """
    rows = None if inv_temperature.all() else np.flatnonzero(inv_temperature)  # None: every row
    if rows is not None and not len(rows):
        return logits.argmax(axis=1)
    x = logits if rows is None else logits[rows]
    with np.errstate(over="ignore", invalid="ignore"):  # overflows are handled just below
        x = x * (inv_temperature if rows is None else inv_temperature[rows])[:, None]
        top = x.max(axis=1)
        x -= top[:, None]  # an overflow to -inf here is a probability of 0, as it should be
    # A row whose scaled logits overflow has a one-hot softmax: it takes its argmax.
    finite = np.isfinite(top)
    if not finite.all():
        kept = np.flatnonzero(finite)
        rows = kept if rows is None else rows[kept]
        x = x[kept]
    pick = (lambda a: a) if rows is None else (lambda a: a[rows])
    u = pick(uniforms).astype(np.float32)  # float32 targets, as the cdf is float32
    k, p = pick(top_k), pick(top_p).astype(np.float32)
    plain = ((k == 0) | (k >= x.shape[1])) & (p >= 1)  # a top_k past the vocabulary cuts nothing
    if plain.all():  # softmax over the whole vocabulary: no sort needed
        cdf = np.exp(x, out=x).cumsum(axis=1)
        picked = _draw(cdf, u * cdf[:, -1])
    elif not plain.any():
        picked = _draw_nucleus(x, k, p, u)
    else:
        picked = np.empty(len(x), np.int64)
        if plain.any():
            cdf = np.exp(x[plain]).cumsum(axis=1)
            picked[plain] = _draw(cdf, u[plain] * cdf[:, -1])
        cut = ~plain
        picked[cut] = _draw_nucleus(x[cut], k[cut], p[cut], u[cut])
    if rows is None:
        return picked
    ids = logits.argmax(axis=1)
    ids[rows] = picked
    return ids


def _draw_nucleus(x, k, p, u):
    """Rows cut to their top_k, then to the smallest prefix whose mass reaches top_p of it."""
    order = x.argsort(axis=1, kind="stable")[:, ::-1]  # likeliest first; ties: the higher index first
    e = np.exp(np.take_along_axis(x, order, axis=1))
    n, width = e.shape
    keep = np.where(k > 0, np.minimum(k, width), width)
    e[np.arange(width)[None, :] >= keep[:, None]] = 0
    cdf = e.cumsum(axis=1)
    cut = np.where(p < 1, (cdf < (p * cdf[:, -1])[:, None]).sum(axis=1) + 1, keep)
    cut = np.minimum(cut, keep)
    mass = cdf[np.arange(n), cut - 1]
    picked = np.minimum(_draw(cdf, u * mass), cut - 1)
    return order[np.arange(n), picked]


def _draw(cdf, targets):
    """Per row, the first index whose cdf exceeds the target (searchsorted side="right"), in range."""
    return np.minimum((cdf <= targets[:, None]).sum(axis=1), cdf.shape[1] - 1)


class BatchSampler:
    """The settings of B streams as arrays, for sample_batch: sampler(logits [B, V], rngs) -> ids [B].

    Each non-greedy stream draws exactly one uniform number per character from its own rng, so its
    ids do not depend on the other rows of the batch.
    """

    def __init__(self, settings):
        """settings: one SamplingParams, or (temperature, top_k, top_p), per stream; each is checked."""
        settings = [s if isinstance(s, SamplingParams) else SamplingParams(*s) for s in settings]
        settings = [(s.temperature, s.top_k, s.top_p) for s in settings]
        self._arrays(np.array([inverse_temperature(t) for t, _, _ in settings], np.float32),
                     np.array([top_k_kept(k) for _, k, _ in settings], np.int64),
                     np.array([1.0 if p is None else p for _, _, p in settings], np.float64))

    @classmethod
    def concat(cls, samplers):
        """One sampler for the rows of these samplers, in order (a batch that streams join)."""
        return cls._of(*(np.concatenate([getattr(b, name) for b in samplers])
                         for name in ("inv_temperature", "top_k", "top_p")))

    def take(self, rows):
        """A sampler for these rows (indices) of this one (a batch that streams leave)."""
        return self._of(self.inv_temperature[rows], self.top_k[rows], self.top_p[rows])

    @classmethod
    def _of(cls, inv_temperature, top_k, top_p):
        sampler = cls.__new__(cls)
        sampler._arrays(inv_temperature, top_k, top_p)
        return sampler

    def _arrays(self, inv_temperature, top_k, top_p):
        """Settings already checked, as arrays: inv_temperature float32 (0: greedy), top_k int64 (0:
        all), top_p float64 (1: all), one entry per stream."""
        self.inv_temperature, self.top_k, self.top_p = inv_temperature, top_k, top_p
        self.greedy = (inv_temperature == 0).tolist()
        self._sampled = np.flatnonzero(inv_temperature).tolist()
        # float32: sample_batch rounds the uniforms to float32 anyway, so the ids are the same.
        self._uniforms = np.zeros(len(inv_temperature), np.float32)
        # One stream with no top-k/top-p cut (generate, stream): 1/T (float32, as the batch code
        # multiplies) and the largest |logit| that 1/T cannot scale past SAFE_MAGNITUDE (float64).
        plain = len(inv_temperature) == 1 and inv_temperature[0] > 0 and top_k[0] == 0 and top_p[0] >= 1
        self._one = (inv_temperature[0], SAFE_MAGNITUDE / float(inv_temperature[0])) if plain else None

    def __call__(self, logits, rngs, rows=None):
        """ids [B]; with rows (indices), only those streams draw and are sampled: ids [len(rows)]
        (a server's other rows are still reading their prime and take no character)."""
        uniforms = self._uniforms
        if rows is not None:
            for b in rows:
                if not self.greedy[b]:
                    uniforms[b] = rngs[b].random()
            return sample_batch(logits[rows], self.inv_temperature[rows], self.top_k[rows], self.top_p[rows],
                                uniforms[rows])
        for b in self._sampled:
            uniforms[b] = rngs[b].random()
        if self._one is not None:  # sample_batch's plain branch on the one row, in fewer numpy calls
            drawn = self._draw_one(logits[0], uniforms[0])
            if drawn is not None:
                return np.array([drawn])
        return sample_batch(logits, self.inv_temperature, self.top_k, self.top_p, uniforms)

    def redraw(self, logits, b):
        """Stream b's id alone, from its row of logits [B, V] and the uniform it drew in the last call:
        the id that call gave (or would have given) it. For a caller isolating a failing row."""
        rows = slice(b, b + 1)
        return int(sample_batch(logits[rows], self.inv_temperature[rows], self.top_k[rows], self.top_p[rows],
                                self._uniforms[rows])[0])

    def _draw_one(self, row, u):
        """One stream's plain draw on its row [V] as a 1-d array (numpy calls on [V] cost about half
        of those on [1, V]), or None where row * 1/T could overflow or is not finite (NaN fails both
        comparisons): sample_batch then draws it, with the same uniform."""
        inv_temperature, bound = self._one
        low, high = row.min(), row.max()
        if not (-bound < float(low) and float(high) < bound):
            return None
        x = row * inv_temperature
        x -= high * inv_temperature  # == x.max(): float32 rounding is monotone and 1/T > 0
        cdf = np.exp(x, out=x).cumsum()
        # searchsorted(side="right") counts the cdf values <= the target, as _draw does.
        return min(int(cdf.searchsorted(u * cdf[-1], side="right")), len(cdf) - 1)


class Sampler:
    """One stream's sampler: sampler(logits [V], rng) -> id. The batch code with B = 1."""

    def __init__(self, temperature=1.0, top_k=None, top_p=None):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self._batch = BatchSampler([(temperature, top_k, top_p)])

    def __call__(self, logits, rng) -> int:
        return int(self._batch(np.asarray(logits)[None, :], [rng])[0])
