"""The one sampler every backend shares, so a seed gives the same text whatever ran the model.

temperature 0 is greedy (argmax); otherwise softmax(logits / temperature), cut to the top_k most
likely characters and then to the smallest set whose probability reaches top_p, and drawn with
one uniform number from the stream's own seeded numpy Generator.
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
    def __init__(self, temperature=1.0, top_k=None, top_p=None):
        check_settings(temperature, top_k, top_p)
        self.temperature = float(temperature)
        self.top_k, self.top_p = top_k, top_p

    def __call__(self, logits, rng) -> int:
        """One id from one row of logits [V]."""
        if self.temperature == 0:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / self.temperature
        if self.top_k is not None and self.top_k < scaled.shape[0]:
            kth = np.partition(scaled, -self.top_k)[-self.top_k]
            scaled[scaled < kth] = -np.inf  # ties with the k-th are kept
        p = np.exp(scaled - scaled.max())
        if self.top_p is not None and self.top_p < 1:
            order = np.argsort(-p, kind="stable")
            mass = np.cumsum(p[order])
            keep = np.searchsorted(mass, self.top_p * mass[-1]) + 1  # the smallest set reaching top_p
            cdf = mass[:keep]
            return int(order[np.searchsorted(cdf, rng.random() * cdf[-1], side="right")])
        cdf = np.cumsum(p)
        return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
