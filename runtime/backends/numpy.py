"""The GRU step in plain numpy from weights.npz: no dependency beyond numpy, and the readable reference.

It is Keras' GRU with reset_after=True (export/FORMAT.md). The embedding lookup and the input
projection are both linear in the one-hot id, so they fold into one table: row i of
embedding @ gru_kernel + gru_bias[0] is the input gates' pre-activation for character i.
"""

import os

import numpy as np

from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self, export_dir, artifact, manifest):
        path = os.path.join(export_dir, artifact["path"])
        with np.load(path, allow_pickle=False) as w:
            self.input_table = w["embedding"] @ w["gru_kernel"] + w["gru_bias"][0]  # [V, 3U]
            self.recurrent_kernel = w["gru_recurrent_kernel"]  # [U, 3U]
            self.recurrent_bias = w["gru_bias"][1]  # [3U]
            self.dense_kernel, self.dense_bias = w["dense_kernel"], w["dense_bias"]  # [U, V], [V]
        self.precision = "float32"
        self.vocab_size, self.units = self.dense_kernel.shape[1], self.dense_kernel.shape[0]

    def _step(self, ids, state):
        U = self.units
        h = state
        hs = []
        for t in range(ids.shape[1]):
            x = self.input_table[ids[:, t]]  # [B, 3U]: xz, xr, xh
            r_h = h @ self.recurrent_kernel + self.recurrent_bias  # [B, 3U]: hz, hr, hh
            z = _sigmoid(x[:, :U] + r_h[:, :U])
            r = _sigmoid(x[:, U:2 * U] + r_h[:, U:2 * U])
            candidate = np.tanh(x[:, 2 * U:] + r * r_h[:, 2 * U:])
            h = z * h + (1 - z) * candidate
            hs.append(h)
        logits = np.stack(hs, axis=1) @ self.dense_kernel + self.dense_bias  # [B, T, V]
        return logits.astype(np.float32, copy=False), h.astype(np.float32, copy=False)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))
