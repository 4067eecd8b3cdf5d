"""The one sampler every backend shares, so a seed gives the same text whatever ran the model.

temperature 0 is greedy (argmax); otherwise softmax(logits / temperature), cut to the top_k most
likely characters and then to the smallest set of those whose probability (renormalised over the
top_k) reaches top_p, and drawn with one uniform number from the stream's own seeded numpy Generator.
"""

import math
import numbers

import numpy as np

from .errors import EstellaError


class SamplingError(EstellaError):
    """A sampling setting outside what is allowed (the message names the flag)."""


def check_settings(temperature=1.0, top_k=None, top_p=None):
    if not isinstance(temperature, numbers.Real) or math.isnan(temperature) or temperature < 0:
        raise SamplingError(f"--temperature must be a number >= 0 (0 picks the likeliest character), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, numbers.Integral) or top_k < 1):
        raise SamplingError(f"--top-k must be an integer >= 1, got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1):
        raise SamplingError(f"--top-p must be in (0, 1], got {top_p!r}")


class Sampler:
    """sampler(logits [V], rng) -> id. Lean on purpose: it runs once per character, so it makes few
    numpy calls (methods rather than np.* wrappers, in place where it can) on float32 logits."""

    def __init__(self, temperature=1.0, top_k=None, top_p=None):
        check_settings(temperature, top_k, top_p)
        self.temperature = float(temperature)
        self.top_k, self.top_p = top_k, top_p
        self.scale = np.float32(1 / temperature) if temperature > 0 else None

    def __call__(self, logits, rng) -> int:
        if self.scale is None:
            return int(logits.argmax())
        x = logits * self.scale
        x -= x.max()
        if self.top_k is None and self.top_p is None:
            cdf = np.exp(x, out=x).cumsum()
            return int(cdf.searchsorted(rng.random() * cdf[-1], side="right"))
        order = x.argsort(kind="stable")[::-1][:self.top_k]  # likeliest first, the top_k of them
        cdf = np.exp(x[order]).cumsum()
        if self.top_p is not None and self.top_p < 1:
            cdf = cdf[:cdf.searchsorted(self.top_p * cdf[-1]) + 1]  # the smallest set whose mass reaches top_p
        return int(order[cdf.searchsorted(rng.random() * cdf[-1], side="right")])
