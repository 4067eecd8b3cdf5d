"""weights.npz's schema (export/FORMAT.md), defined once: the export writes it, the numpy backend reads it.

Schema 2 holds 1 to 4 recurrent layers of one cell kind:
    embedding [V, E]
    layer{k}_kernel [In_k, G*U_k]  (In_0 = E, In_k = U_{k-1})
    layer{k}_recurrent_kernel [U_k, G*U_k]
    layer{k}_bias  GRU [2, 3U_k] (row 0 input, row 1 recurrent) | LSTM [4U_k]
    dense_kernel [U_last, V], dense_bias [V]
G is 3 for a GRU (gates z, r, h) and 4 for an LSTM (i, f, c, o). Schema 1 (one GRU: gru_kernel,
gru_recurrent_kernel, gru_bias) reads as a one-layer GRU.
"""

import numpy as np

GATES = {"gru": 3, "lstm": 4}
GATE_ORDER = {"gru": ("z", "r", "h"), "lstm": ("i", "f", "c", "o")}
# Each cell's parts of the state row, in order: the manifest's state.layout is checked against it.
STATE_PARTS = {"gru": ("h",), "lstm": ("h", "c")}
MAX_LAYERS = 4
SCHEMA1_KEYS = ("embedding", "gru_kernel", "gru_recurrent_kernel", "gru_bias", "dense_kernel", "dense_bias")


class WeightsFormatError(ValueError):
    """The arrays are not weights.npz of either schema; the message says which array and why."""


def layer_keys(k) -> tuple:
    return f"layer{k}_kernel", f"layer{k}_recurrent_kernel", f"layer{k}_bias"


def keys(layers) -> list:
    """Every key of a schema-2 file of `layers` recurrent layers, in order."""
    return ["embedding", *(key for k in range(layers) for key in layer_keys(k)), "dense_kernel", "dense_bias"]


def from_schema1(arrays) -> dict:
    """A schema-1 file's arrays under schema 2's names (one GRU layer); a schema-2 dict unchanged."""
    if "gru_kernel" not in arrays:
        return dict(arrays)
    renamed = {"gru_kernel": "layer0_kernel", "gru_recurrent_kernel": "layer0_recurrent_kernel",
               "gru_bias": "layer0_bias"}
    return {renamed.get(key, key): value for key, value in arrays.items()}


def expected_shapes(cell, vocab_size, embedding_dim, units) -> dict:
    """{key: shape} of a schema-2 file for this architecture."""
    G = GATES[cell]
    shapes = {"embedding": (vocab_size, embedding_dim)}
    fan_in = embedding_dim
    for k, u in enumerate(units):
        kernel, recurrent, bias = layer_keys(k)
        shapes[kernel] = (fan_in, G * u)
        shapes[recurrent] = (u, G * u)
        shapes[bias] = (2, G * u) if cell == "gru" else (G * u,)
        fan_in = u
    shapes["dense_kernel"] = (units[-1], vocab_size)
    shapes["dense_bias"] = (vocab_size,)
    return shapes


def parameter_count(cell, vocab_size, embedding_dim, units) -> int:
    """The model's weights: every array of this file (the Keras model holds no others)."""
    return sum(int(np.prod(shape)) for shape in expected_shapes(cell, vocab_size, embedding_dim, units).values())


def architecture(arrays) -> dict:
    """{"cell", "vocab_size", "embedding_dim", "units"} of schema-2 arrays (from_schema1 first), checked:
    every array present, float32, with the shapes expected_shapes gives. Raises WeightsFormatError."""
    layers = 0
    while layer_keys(layers)[1] in arrays:
        layers += 1
    if layers == 0:
        raise WeightsFormatError("it has no recurrent layer (no array 'layer0_recurrent_kernel' or 'gru_recurrent_kernel')")
    if layers > MAX_LAYERS:
        raise WeightsFormatError(f"it has {layers} recurrent layers; at most {MAX_LAYERS} are allowed")
    missing = [key for key in keys(layers) if key not in arrays]
    if missing:
        raise WeightsFormatError(f"it has no array {missing[0]!r}")
    for key in keys(layers):
        if arrays[key].dtype != np.float32:
            raise WeightsFormatError(f"{key} is {arrays[key].dtype}, not float32")
    if arrays["embedding"].ndim != 2 or arrays["layer0_recurrent_kernel"].ndim != 2:
        raise WeightsFormatError("embedding and layer0_recurrent_kernel must be matrices")
    V, E = arrays["embedding"].shape
    units = [int(arrays[layer_keys(k)[1]].shape[0]) for k in range(layers)]
    bias = arrays["layer0_bias"]
    cell = "gru" if bias.ndim == 2 else "lstm"  # GRU: [2, 3U] (input and recurrent rows); LSTM: [4U]
    for key, want in expected_shapes(cell, V, E, units).items():
        if arrays[key].shape != want:
            raise WeightsFormatError(f"{key} has shape {list(arrays[key].shape)}, expected {list(want)} "
                                     f"({cell}, V={V} E={E} units={units})")
    return {"cell": cell, "vocab_size": int(V), "embedding_dim": int(E), "units": units}

