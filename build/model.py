"""The model: Embedding(V, E) -> GRU(U) -> Dense(V) logits, in Keras 3 APIs only.

The GRU settings (reset_after, sigmoid recurrent activation, tanh) are the ones that let
Keras use cuDNN on a GPU; they are also the gate layout the exported graphs write out.
"""

import keras

LAYER_NAMES = ("embedding", "gru", "logits")


def build_model(vocab_size: int, embedding_dim: int, units: int, batch_size=None, seq_length=None):
    """The training model: ids [B, T] -> logits [B, T, V]."""
    ids = keras.Input(batch_shape=(batch_size, seq_length), dtype="int32", name="ids")
    x = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")(ids)
    x = _gru(units)(x)
    # float32 logits even under a mixed-precision policy: the softmax needs their full precision.
    logits = keras.layers.Dense(vocab_size, name="logits", dtype="float32")(x)
    return keras.Model(ids, logits, name="estella")


def build_step_model(vocab_size: int, embedding_dim: int, units: int, batch_size=None):
    """The generation model: (ids [B, T], state [B, U]) -> (logits [B, T, V], new_state [B, U]).

    The state is an explicit input and output rather than a stateful layer, so that the caller
    carries it, exactly as every exported step graph does.
    """
    ids = keras.Input(batch_shape=(batch_size, None), dtype="int32", name="ids")
    state = keras.Input(batch_shape=(batch_size, units), dtype="float32", name="state")
    x = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")(ids)
    x, new_state = _gru(units, return_state=True)(x, initial_state=state)
    logits = keras.layers.Dense(vocab_size, name="logits")(x)
    return keras.Model([ids, state], [logits, new_state], name="estella_step")


def copy_weights(source: keras.Model, target: keras.Model):
    """Move the trained weights into a model of another shape (batch size, explicit state)."""
    for name in LAYER_NAMES:
        target.get_layer(name).set_weights(source.get_layer(name).get_weights())


def _gru(units, return_state=False):
    return keras.layers.GRU(units, return_sequences=True, return_state=return_state, reset_after=True,
                            activation="tanh", recurrent_activation="sigmoid",
                            recurrent_initializer="glorot_uniform", name="gru")
