"""The GRU step written out in TensorFlow ops from weights.npz's arrays (the cell in FORMAT.md).

A Keras GRU lowers to a WHILE loop (TFLite) or a Loop (ONNX) even for one step; the cell written
out lowers to plain matmuls and activations. The T=1 graphs hold the weights as constants, not
variables, so that no converter can leave them behind as VAR_HANDLE/READ_VARIABLE ops.

The embedding lookup and the input projection are both linear in the one-hot id, so the graphs
gather a row of one [V, 3U] table, embedding @ gru_kernel + gru_bias[0], instead of gathering an
embedding row and multiplying it by the [E, 3U] kernel on every character. fold=False builds the
graph as the layers are written (embedding, then the input matmul): the bench's baseline only.
"""

import numpy as np
import tensorflow as tf


def input_table(weights) -> np.ndarray:
    """[V, 3U] float32: each character's input-gate pre-activations (xz, xr, xh), computed in float64."""
    table = (weights["embedding"].astype(np.float64) @ weights["gru_kernel"].astype(np.float64)
             + weights["gru_bias"][0].astype(np.float64))
    return table.astype(np.float32)


def graph_weights(weights, fold=True) -> dict:
    """The arrays a step graph holds: the folded table replaces embedding, gru_kernel and the input bias."""
    w = {"gru_recurrent_kernel": weights["gru_recurrent_kernel"], "gru_recurrent_bias": weights["gru_bias"][1],
         "dense_kernel": weights["dense_kernel"], "dense_bias": weights["dense_bias"]}
    if fold:
        return {"input_table": input_table(weights), **w}
    return {"embedding": weights["embedding"], "gru_kernel": weights["gru_kernel"],
            "gru_input_bias": weights["gru_bias"][0], **w}


def input_gates(w, ids):
    """ids int32 [...] -> the input gates' pre-activations [..., 3U]: one gather, or gather and matmul unfolded."""
    if "input_table" in w:
        return tf.gather(w["input_table"], ids)
    x = tf.gather(w["embedding"], ids)
    projected = tf.tensordot(x, w["gru_kernel"], 1) if x.shape.rank > 2 else tf.matmul(x, w["gru_kernel"])
    return projected + w["gru_input_bias"]


def gru_cell(w, x, h):
    """x [B, 3U] (input gates, from input_gates), h [B, U] -> new h [B, U]; w from graph_weights."""
    xz, xr, xh = tf.split(x, 3, axis=-1)
    hz, hr, hh = tf.split(tf.matmul(h, w["gru_recurrent_kernel"]) + w["gru_recurrent_bias"], 3, axis=-1)
    z = tf.sigmoid(xz + hz)
    r = tf.sigmoid(xr + hr)
    return z * h + (1.0 - z) * tf.tanh(xh + r * hh)


def gru_step(w, ids, state):
    """ids int32 [B, 1], state float32 [B, U] -> (logits [B, 1, V], new_state [B, U]); w from graph_weights."""
    # Reshapes with -1, not slices of a fixed batch: a TFLite interpreter can then resize the batch.
    new_state = gru_cell(w, input_gates(w, tf.reshape(ids, [-1])), state)
    logits = tf.matmul(new_state, w["dense_kernel"]) + w["dense_bias"]
    return tf.reshape(logits, [-1, 1, logits.shape[-1]]), new_state


def gru_sequence(w, ids, state):
    """ids int32 [B, T], state [B, U] -> (logits [B, T, V], new_state [B, U]), any T >= 1."""
    xs = input_gates(w, tf.transpose(ids))  # time-major [T, B, 3U] for scan
    states = tf.scan(lambda h, x: gru_cell(w, x, h), xs, initializer=state)  # [T, B, U]
    logits = tf.einsum("tbu,uv->btv", states, w["dense_kernel"]) + w["dense_bias"]
    return logits, states[-1]


def step_function(weights, batch_size=None, fold=True):
    """The T=1 step as a tf.function with weights as constants, inputs ids/state, outputs logits/new_state.

    weights: weights.npz's arrays. fold=False keeps the embedding and the input matmul (bench baseline).
    """
    units = weights["gru_recurrent_kernel"].shape[0]
    arrays = graph_weights(weights, fold)

    @tf.function(input_signature=[tf.TensorSpec([batch_size, 1], tf.int32, name="ids"),
                                  tf.TensorSpec([batch_size, units], tf.float32, name="state")])
    def step(ids, state):
        logits, new_state = gru_step({k: tf.constant(v) for k, v in arrays.items()}, ids, state)
        return {"logits": logits, "new_state": new_state}

    return step
