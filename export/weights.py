"""weights.npz: the model's weights as plain float32 arrays, schema 2 (estella.runtime.weights_format).

The numpy backend runs from this file alone, and the step graphs are built from the same arrays,
so every artifact starts from one copy of the weights. They are read from the Keras step model by
its layer names (build.model.rnn_layer_names).
"""

import numpy as np

from estella.build.model import CELLS, rnn_layer_names
from estella.runtime import weights_format
from estella.runtime.errors import EstellaError


def model_cell(step_model) -> tuple:
    """(cell, layers) of a Keras model of the family: its first recurrent layer is named after its cell."""
    names = {layer.name for layer in step_model.layers}
    for cell in CELLS:
        if cell in names:
            layers = 1
            while f"{cell}_{layers}" in names:
                layers += 1
            return cell, layers
    raise EstellaError(f"the model has no recurrent layer named {' or '.join(CELLS)} (its layers: {sorted(names)})")


def weights_from_model(step_model) -> dict:
    """Read the arrays out of the Keras step model (Embedding -> N GRU or LSTM layers -> Dense)."""
    cell, layers = model_cell(step_model)
    (embedding,) = step_model.get_layer("embedding").get_weights()
    weights = {"embedding": embedding}
    for k, name in enumerate(rnn_layer_names(cell, layers)):
        weights.update(zip(weights_format.layer_keys(k), step_model.get_layer(name).get_weights()))
    weights["dense_kernel"], weights["dense_bias"] = step_model.get_layer("logits").get_weights()
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}


def architecture(weights) -> dict:
    """{"cell", "vocab_size", "embedding_dim", "units"} of a weights dict; raises EstellaError naming the array."""
    try:
        return weights_format.architecture(weights)
    except weights_format.WeightsFormatError as e:
        # e.g. a GRU with reset_after=False has a [3U] bias; the step graphs only implement reset_after=True.
        raise EstellaError(f"the weights are not the model family's (Embedding -> GRU(reset_after=True) or LSTM "
                           f"layers -> Dense): {e}") from None


def save_weights_npz(path, weights):
    architecture(weights)
    with open(path, "wb") as f:
        np.savez(f, **weights)
