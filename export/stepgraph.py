"""The GRU step written out in TensorFlow ops from weights.npz's arrays (the cell in FORMAT.md).

A Keras GRU lowers to a WHILE loop (TFLite) or a Loop (ONNX) even for one step; the cell written
out lowers to plain matmuls and activations. The T=1 graphs hold the weights as constants, not
variables, so that no converter can leave them behind as VAR_HANDLE/READ_VARIABLE ops.
"""

import tensorflow as tf


def gru_cell(w, x, h):
    """x [B, E] (embedded input), h [B, U] -> new h [B, U]; w maps weights.npz names to tensors."""
    xz, xr, xh = tf.split(tf.matmul(x, w["gru_kernel"]) + w["gru_bias"][0], 3, axis=-1)
    hz, hr, hh = tf.split(tf.matmul(h, w["gru_recurrent_kernel"]) + w["gru_bias"][1], 3, axis=-1)
    z = tf.sigmoid(xz + hz)
    r = tf.sigmoid(xr + hr)
    return z * h + (1.0 - z) * tf.tanh(xh + r * hh)


def gru_step(w, ids, state):
    """ids int32 [B, 1], state float32 [B, U] -> (logits [B, 1, V], new_state [B, U])."""
    # Reshapes with -1, not slices of a fixed batch: a TFLite interpreter can then resize the batch.
    x = tf.gather(w["embedding"], tf.reshape(ids, [-1]))
    new_state = gru_cell(w, x, state)
    logits = tf.matmul(new_state, w["dense_kernel"]) + w["dense_bias"]
    return tf.reshape(logits, [-1, 1, logits.shape[-1]]), new_state


def gru_sequence(w, ids, state):
    """ids int32 [B, T], state [B, U] -> (logits [B, T, V], new_state [B, U]), any T >= 1."""
    xs = tf.transpose(tf.gather(w["embedding"], ids), [1, 0, 2])  # time-major [T, B, E] for scan
    states = tf.scan(lambda h, x: gru_cell(w, x, h), xs, initializer=state)  # [T, B, U]
    logits = tf.einsum("tbu,uv->btv", states, w["dense_kernel"]) + w["dense_bias"]
    return logits, states[-1]


def step_function(weights, batch_size=None):
    """The T=1 step as a tf.function with weights as constants, inputs ids/state, outputs logits/new_state."""
    units = weights["gru_recurrent_kernel"].shape[0]

    @tf.function(input_signature=[tf.TensorSpec([batch_size, 1], tf.int32, name="ids"),
                                  tf.TensorSpec([batch_size, units], tf.float32, name="state")])
    def step(ids, state):
        logits, new_state = gru_step({k: tf.constant(v) for k, v in weights.items()}, ids, state)
        return {"logits": logits, "new_state": new_state}

    return step
