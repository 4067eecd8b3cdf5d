"""weights.npz: the model's weights as plain float32 arrays, named as in FORMAT.md.

The numpy backend runs from this file alone, and the T=1 step graphs are built from the same
arrays, so every artifact starts from one copy of the weights.
"""

import numpy as np

from estella.runtime.errors import EstellaError

WEIGHT_KEYS = ("embedding", "gru_kernel", "gru_recurrent_kernel", "gru_bias", "dense_kernel", "dense_bias")


def weights_from_model(step_model) -> dict:
    """Read the arrays out of the Keras step model (Embedding -> GRU(reset_after) -> Dense)."""
    (embedding,) = step_model.get_layer("embedding").get_weights()
    kernel, recurrent_kernel, bias = step_model.get_layer("gru").get_weights()
    dense_kernel, dense_bias = step_model.get_layer("logits").get_weights()
    weights = dict(zip(WEIGHT_KEYS, (embedding, kernel, recurrent_kernel, bias, dense_kernel, dense_bias)))
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}


def dims(weights) -> tuple:
    """(V, E, U) of a weights dict."""
    V, E = weights["embedding"].shape
    return V, E, weights["gru_recurrent_kernel"].shape[0]


def save_weights_npz(path, weights):
    V, E, U = dims(weights)
    expected = {"embedding": (V, E), "gru_kernel": (E, 3 * U), "gru_recurrent_kernel": (U, 3 * U),
                "gru_bias": (2, 3 * U), "dense_kernel": (U, V), "dense_bias": (V,)}
    for key, shape in expected.items():
        if weights[key].shape != shape:
            # A GRU with reset_after=False has a [3U] bias; the step graphs only implement reset_after=True.
            raise EstellaError(f"weight {key} has shape {weights[key].shape}, expected {shape} "
                               "(Embedding -> GRU(reset_after=True) -> Dense)")
    with open(path, "wb") as f:
        np.savez(f, **weights)
