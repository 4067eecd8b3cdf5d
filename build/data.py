"""The data pipeline: windows of seq_length+1 ids, split into input and target shifted by one.

One numpy-based keras.utils.PyDataset serves both backends: tf.data is not available where
JAX trains without TensorFlow. Keras runs it on worker threads, which is the prefetch.
"""

import keras
import numpy as np


def split(ids: np.ndarray, validation_fraction: float):
    """Hold out the tail of the text: the model never trains on it."""
    n_val = int(len(ids) * validation_fraction)
    return (ids[:len(ids) - n_val], ids[len(ids) - n_val:]) if n_val else (ids, ids[:0])


def windows_needed(seq_length: int, batch_size: int) -> int:
    """Characters one batch of windows needs."""
    return (seq_length + 1) * batch_size


class CharWindows(keras.utils.PyDataset):
    """Batches of (input, target) windows cut from `ids`.

    Each epoch cuts consecutive, non-overlapping windows of seq_length+1 characters, as the
    original did, but from a random offset and in a shuffled order, so that the model sees
    other boundaries every epoch. Incomplete batches are dropped. With shuffle=False the
    windows are fixed, which is what validation needs.
    """

    def __init__(self, ids, seq_length, batch_size, shuffle=True, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.ids = np.asarray(ids, dtype=np.int32)
        self.seq_length, self.batch_size, self.shuffle = seq_length, batch_size, shuffle
        self.rng = np.random.default_rng(seed)
        # The offset can take up to seq_length chars, so count batches without them: a fixed length.
        usable = len(self.ids) - (seq_length if shuffle else 0)
        self.n_batches = max(usable // (seq_length + 1), 0) // batch_size
        if self.n_batches == 0:
            raise ValueError(f"{len(self.ids)} characters make no batch of {batch_size} windows of "
                             f"{seq_length}+1 characters")
        self.on_epoch_end()

    def __len__(self):
        return self.n_batches

    def on_epoch_end(self):
        offset = int(self.rng.integers(0, self.seq_length + 1)) if self.shuffle else 0
        n = self.n_batches * self.batch_size
        starts = offset + np.arange(n) * (self.seq_length + 1)
        self.starts = self.rng.permutation(starts) if self.shuffle else starts

    def __getitem__(self, index):
        starts = self.starts[index * self.batch_size:(index + 1) * self.batch_size]
        chunk = self.ids[starts[:, None] + np.arange(self.seq_length + 1)]
        return chunk[:, :-1], chunk[:, 1:]

