"""The model: Embedding(V, E) -> 1 to 4 GRU or LSTM layers -> Dense(V) logits, in Keras 3 APIs only.

The cell settings (GRU reset_after, sigmoid recurrent activation, tanh; LSTM with the same
activations) are the ones that let Keras use cuDNN on a GPU; they are also the gate layouts the
exported graphs write out. Dropout is its own Keras layer (on the embedding output, between
layers and before the dense layer) rather than the cells' dropout arguments, which would rule
cuDNN out; the step model has no dropout at all.
"""

# keras is imported inside the functions that make layers, so that the flag checks (build/config.py)
# read CELLS and MAX_LAYERS without loading TensorFlow.

from estella.runtime.weights_format import MAX_LAYERS, STATE_PARTS  # noqa: F401 (MAX_LAYERS: for the flags)

CELLS = ("gru", "lstm")


def rnn_layer_names(cell: str, layers: int) -> list:
    """The recurrent layers' Keras names: the first is named after its cell (so a one-layer GRU run
    of the previous version loads unchanged), layer k >= 1 is f"{cell}_{k}"."""
    return [cell if k == 0 else f"{cell}_{k}" for k in range(layers)]


def layer_names(cell: str, layers: int) -> list:
    """Every layer that holds weights, in order."""
    return ["embedding", *rnn_layer_names(cell, layers), "logits"]


def units_list(units, layers=None) -> list:
    """One units value per layer: an int is repeated `layers` times (default 1)."""
    if isinstance(units, int):
        return [units] * (layers or 1)
    return [int(u) for u in units]


def state_layout(cell: str, units) -> list:
    """The state row's parts in order: [{"layer", "cell", "part", "offset", "size"}] (manifest `state.layout`)."""
    layout, offset = [], 0
    for k, u in enumerate(units_list(units)):
        for part in STATE_PARTS[cell]:
            layout.append({"layer": k, "cell": cell, "part": part, "offset": offset, "size": u})
            offset += u
    return layout


def state_size(cell: str, units) -> int:
    return sum(part["size"] for part in state_layout(cell, units))


def build_model(vocab_size: int, embedding_dim: int, units, cell="gru", dropout=0.0, batch_size=None,
                seq_length=None):
    """The training model: ids [B, T] -> logits [B, T, V]. units: an int (one layer) or one per layer."""
    import keras

    units = units_list(units)
    ids = keras.Input(batch_shape=(batch_size, seq_length), dtype="int32", name="ids")
    x = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")(ids)
    for name, u in zip(rnn_layer_names(cell, len(units)), units):
        x = _dropout(x, dropout)
        x = _rnn(cell, u, name)(x)
    x = _dropout(x, dropout)
    # float32 logits even under a mixed-precision policy: the softmax needs their full precision.
    logits = keras.layers.Dense(vocab_size, name="logits", dtype="float32")(x)
    return keras.Model(ids, logits, name="estella")


def build_step_model(vocab_size: int, embedding_dim: int, units, cell="gru", batch_size=None):
    """The generation model: (ids [B, T], state [B, S]) -> (logits [B, T, V], new_state [B, S]).

    The state is one explicit input and output (every layer's parts side by side, as
    state_layout says) rather than stateful layers, so that the caller carries it, exactly as
    every exported step graph does.
    """
    import keras

    units = units_list(units)
    layout = state_layout(cell, units)
    ids = keras.Input(batch_shape=(batch_size, None), dtype="int32", name="ids")
    state = keras.Input(batch_shape=(batch_size, layout[-1]["offset"] + layout[-1]["size"]), dtype="float32",
                        name="state")
    x = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")(ids)
    new_parts = []
    for k, (name, u) in enumerate(zip(rnn_layer_names(cell, len(units)), units)):
        parts = [state[:, p["offset"]:p["offset"] + p["size"]] for p in layout if p["layer"] == k]
        x, *layer_state = _rnn(cell, u, name, return_state=True)(x, initial_state=parts)
        new_parts.extend(layer_state)  # Keras returns (h,) for a GRU and (h, c) for an LSTM: the layout's order
    new_state = new_parts[0] if len(new_parts) == 1 else keras.layers.Concatenate(axis=-1)(new_parts)
    logits = keras.layers.Dense(vocab_size, name="logits")(x)
    return keras.Model([ids, state], [logits, new_state], name="estella_step")


def copy_weights(source, target, cell="gru", layers=1):
    """Move the trained weights into a model of another shape (batch size, explicit state)."""
    for name in layer_names(cell, layers):
        target.get_layer(name).set_weights(source.get_layer(name).get_weights())


def _dropout(x, rate):
    import keras

    return keras.layers.Dropout(rate)(x) if rate > 0 else x


def _rnn(cell, units, name, return_state=False):
    import keras

    if cell == "gru":
        return keras.layers.GRU(units, return_sequences=True, return_state=return_state, reset_after=True,
                                activation="tanh", recurrent_activation="sigmoid",
                                recurrent_initializer="glorot_uniform", name=name)
    if cell == "lstm":
        return keras.layers.LSTM(units, return_sequences=True, return_state=return_state, unit_forget_bias=True,
                                 activation="tanh", recurrent_activation="sigmoid",
                                 recurrent_initializer="glorot_uniform", name=name)
    raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(CELLS)}")
