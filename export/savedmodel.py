"""The SavedModel in TF Serving's layout (saved_model/1/): weights as variables, B and T dynamic.

Signatures:
    serving_default  (ids int32 [B, T], state float32 [B, S]) -> logits [B, T, V], new_state [B, S]
    sample           (ids, state, temperature float32 [], seed int32 []) -> next_ids int32 [B, 1], new_state
`sample` draws the next character in-graph from the last step's logits / temperature, as the TF
tutorial's OneStep did, so that a TF Serving client can generate without numpy. It is stateless:
the same seed gives the same draw, so a client passes a new seed (say base + step) each call.

Both run the folded input table (stepgraph.py) over the T steps with tf.scan: the variables are
stepgraph.graph_weights' arrays (input_table, each layer's recurrent kernel, a GRU layer's recurrent
bias, layers k >= 1's kernel and input bias, dense_kernel, dense_bias).

A plain tf.Module rather than keras.export.ExportArchive, which stores every weight twice
(keras-team/keras#23553: twice the file size, and twice the memory in TF Serving).
"""

import os

import tensorflow as tf

from estella.runtime import weights_format

from .stepgraph import Stack, graph_weights, sequence, state_size

SAVED_MODEL_DIR = os.path.join("saved_model", "1")  # TF Serving loads <model>/<version>/


class StepModule(tf.Module):
    def __init__(self, weights, fold=True):
        super().__init__(name="estella_step")
        self.weights = {k: tf.Variable(v, trainable=False, name=k) for k, v in graph_weights(weights, fold).items()}
        arch = weights_format.architecture(weights)
        self.stack = Stack(self.weights, arch["cell"], arch["units"])
        ids = tf.TensorSpec([None, None], tf.int32, name="ids")
        state = tf.TensorSpec([None, state_size(weights)], tf.float32, name="state")
        self.step = tf.function(self._step, input_signature=[ids, state])
        self.sample = tf.function(self._sample, input_signature=[
            ids, state, tf.TensorSpec([], tf.float32, name="temperature"), tf.TensorSpec([], tf.int32, name="seed")])

    def _step(self, ids, state):
        logits, new_state = sequence(self.stack, ids, state)
        return {"logits": logits, "new_state": new_state}

    def _sample(self, ids, state, temperature, seed):
        logits, new_state = sequence(self.stack, ids, state)
        scaled = logits[:, -1, :] / temperature
        next_ids = tf.random.stateless_categorical(scaled, 1, seed=tf.stack([seed, 0]), dtype=tf.int32)
        return {"next_ids": next_ids, "new_state": new_state}


def write_saved_model(weights, path, fold=True):
    module = StepModule(weights, fold)
    tf.saved_model.save(module, path, signatures={"serving_default": module.step, "sample": module.sample})
