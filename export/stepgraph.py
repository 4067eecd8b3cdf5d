"""The step written out in TensorFlow ops from weights.npz's arrays: 1 to 4 GRU or LSTM layers (FORMAT.md).

A Keras GRU or LSTM lowers to a WHILE loop (TFLite) or a Loop (ONNX) even for one step; the cells
written out lower to plain matmuls and activations. The T=1 graphs hold the weights as constants,
not variables, so that no converter can leave them behind as VAR_HANDLE/READ_VARIABLE ops.

The embedding lookup and the first layer's input projection are both linear in the one-hot id, so
the graphs gather a row of one [V, G*U0] table, embedding @ layer0_kernel + input bias (a GRU's
bias[0], an LSTM's whole bias), instead of gathering an embedding row and multiplying it by the
[E, G*U0] kernel on every character. Layers k >= 1 multiply by their kernel. fold=False builds the
graph as the layers are written (embedding, then the input matmul): the bench's baseline only.

The state is one tensor [B, S], split into each layer's parts (h; h then c for an LSTM) and joined
again in the same order, the manifest's state.layout.
"""

import numpy as np
import tensorflow as tf

from estella.runtime import weights_format


def input_table(weights) -> np.ndarray:
    """[V, G*U0] float32: each character's first-layer input-gate pre-activations, computed in float64."""
    bias = weights["layer0_bias"]
    input_bias = bias[0] if bias.ndim == 2 else bias  # GRU: the input row; LSTM: its one bias
    table = (weights["embedding"].astype(np.float64) @ weights["layer0_kernel"].astype(np.float64)
             + input_bias.astype(np.float64))
    return table.astype(np.float32)


def graph_weights(weights, fold=True) -> dict:
    """The arrays a step graph holds: the folded table replaces embedding, layer0_kernel and its input bias.

    Per layer k: layer{k}_recurrent_kernel; a GRU's layer{k}_recurrent_bias (its bias[1]); for k >= 1
    layer{k}_kernel and layer{k}_input_bias (a GRU's bias[0], an LSTM's whole bias). Then dense_*.
    """
    arch = weights_format.architecture(weights)
    w = {}
    for k in range(len(arch["units"])):
        kernel, recurrent_kernel, bias = (weights[key] for key in weights_format.layer_keys(k))
        gru = arch["cell"] == "gru"
        if k > 0 or not fold:
            w[f"layer{k}_kernel"] = kernel
            w[f"layer{k}_input_bias"] = bias[0] if gru else bias
        w[f"layer{k}_recurrent_kernel"] = recurrent_kernel
        if gru:
            w[f"layer{k}_recurrent_bias"] = bias[1]
    w["dense_kernel"], w["dense_bias"] = weights["dense_kernel"], weights["dense_bias"]
    if fold:
        return {"input_table": input_table(weights), **w}
    return {"embedding": weights["embedding"], **w}


class Stack:
    """The recurrent layers of one architecture over a dict of graph tensors (from graph_weights)."""

    def __init__(self, w, cell, units):
        self.w, self.cell, self.units = w, cell, list(units)
        self.parts = len(weights_format.STATE_PARTS[cell])
        self.sizes = [u for u in self.units for _ in range(self.parts)]  # the layout's part sizes, in order

    def first_gates(self, ids):
        """ids int32 [...] -> the first layer's input-gate pre-activations [..., G*U0]."""
        if "input_table" in self.w:
            return tf.gather(self.w["input_table"], ids)
        return self.project(tf.gather(self.w["embedding"], ids), 0)

    def project(self, x, k):
        kernel = self.w[f"layer{k}_kernel"]
        projected = tf.tensordot(x, kernel, 1) if x.shape.rank > 2 else tf.matmul(x, kernel)
        return projected + self.w[f"layer{k}_input_bias"]

    def step(self, gates, state):
        """gates [B, G*U0] (first_gates), state [B, S] -> (the last layer's h [B, U_last], new state [B, S])."""
        parts = tf.split(state, self.sizes, axis=-1) if len(self.sizes) > 1 else [state]
        new_parts = []
        for k in range(len(self.units)):
            x = gates if k == 0 else self.project(h, k)
            own = parts[k * self.parts:(k + 1) * self.parts]
            if self.cell == "gru":
                h = gru_cell(self.w, k, x, own[0])
                new_parts.append(h)
            else:
                h, c = lstm_cell(self.w, k, x, *own)
                new_parts.extend([h, c])
        return h, (tf.concat(new_parts, axis=-1) if len(new_parts) > 1 else new_parts[0])

    def last_h(self, states):
        """The last layer's h out of state rows [..., S]: the first part of its slice."""
        offset = sum(self.sizes[:-self.parts])
        return states[..., offset:offset + self.units[-1]]


def gru_cell(w, k, x, h):
    """Keras GRU(reset_after=True): x [B, 3U] the input gates (xz, xr, xh), h [B, U] -> new h [B, U]."""
    xz, xr, xh = tf.split(x, 3, axis=-1)
    hz, hr, hh = tf.split(tf.matmul(h, w[f"layer{k}_recurrent_kernel"]) + w[f"layer{k}_recurrent_bias"], 3, axis=-1)
    z = tf.sigmoid(xz + hz)
    r = tf.sigmoid(xr + hr)
    return z * h + (1.0 - z) * tf.tanh(xh + r * hh)


def lstm_cell(w, k, x, h, c):
    """Keras LSTM: x [B, 4U] the input gates with the bias (i, f, c, o), h and c [B, U] -> new (h, c)."""
    i, f, g, o = tf.split(x + tf.matmul(h, w[f"layer{k}_recurrent_kernel"]), 4, axis=-1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c), c


def step(stack, ids, state):
    """ids int32 [B, 1], state float32 [B, S] -> (logits [B, 1, V], new_state [B, S])."""
    # Reshapes with -1, not slices of a fixed batch: a TFLite interpreter can then resize the batch.
    h, new_state = stack.step(stack.first_gates(tf.reshape(ids, [-1])), state)
    logits = tf.matmul(h, stack.w["dense_kernel"]) + stack.w["dense_bias"]
    return tf.reshape(logits, [-1, 1, logits.shape[-1]]), new_state


def sequence(stack, ids, state):
    """ids int32 [B, T], state [B, S] -> (logits [B, T, V], new_state [B, S]), any T >= 1."""
    xs = stack.first_gates(tf.transpose(ids))  # time-major [T, B, G*U0] for scan
    states = tf.scan(lambda s, x: stack.step(x, s)[1], xs, initializer=state)  # [T, B, S]
    logits = tf.einsum("tbu,uv->btv", stack.last_h(states), stack.w["dense_kernel"]) + stack.w["dense_bias"]
    return logits, states[-1]


def state_size(weights) -> int:
    arch = weights_format.architecture(weights)
    return len(weights_format.STATE_PARTS[arch["cell"]]) * sum(arch["units"])


def step_function(weights, batch_size=None, fold=True):
    """The T=1 step as a tf.function with weights as constants, inputs ids/state, outputs logits/new_state.

    weights: weights.npz's arrays. fold=False keeps the embedding and the input matmul (bench baseline).
    """
    arrays = graph_weights(weights, fold)
    arch = weights_format.architecture(weights)

    @tf.function(input_signature=[tf.TensorSpec([batch_size, 1], tf.int32, name="ids"),
                                  tf.TensorSpec([batch_size, state_size(weights)], tf.float32, name="state")])
    def step_fn(ids, state):
        stack = Stack({k: tf.constant(v) for k, v in arrays.items()}, arch["cell"], arch["units"])
        logits, new_state = step(stack, ids, state)
        return {"logits": logits, "new_state": new_state}

    return step_fn
