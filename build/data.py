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

    Each pass over the text cuts consecutive, non-overlapping windows of seq_length+1 characters,
    as the original did, but from a random offset and in a shuffled order, so that the model sees
    other boundaries every pass. Incomplete batches are dropped. With shuffle=False the windows
    are fixed, which is what validation needs.

    An epoch is one pass, or `steps_per_epoch` batches that carry on where the last epoch
    stopped (starting new passes as needed): Keras' own steps_per_epoch would run a finite
    dataset dry and cut an epoch short.

    The order is a pure function of (seed, epoch): pass p is shuffled by its own
    default_rng([seed, p]), and set_epoch(e) picks epoch e's stretch of the passes. So a resumed
    run sees exactly the batches it would have seen without the interruption, with no RNG
    state to save. train() calls set_epoch from on_epoch_begin: Keras also calls the dataset's
    on_epoch_end outside epochs (at the start of fit), so counting those calls would drift.
    """

    def __init__(self, ids, seq_length, batch_size, shuffle=True, seed=0, steps_per_epoch=None, **kwargs):
        super().__init__(**kwargs)
        # A memmap (a prepared corpus) stays on disk: batches cut their windows from it and cast them.
        self.ids = ids if isinstance(ids, np.memmap) else np.asarray(ids, dtype=np.int32)
        self.seq_length, self.batch_size, self.shuffle, self.seed = seq_length, batch_size, shuffle, seed
        # The offset can take up to seq_length chars, so count batches without them: a fixed length.
        usable = len(self.ids) - (seq_length if shuffle else 0)
        self.batches_per_pass = max(usable // (seq_length + 1), 0) // batch_size
        if self.batches_per_pass == 0:
            raise ValueError(f"{len(self.ids)} characters make no batch of {batch_size} windows of "
                             f"{seq_length}+1 characters")
        self.n_batches = steps_per_epoch or self.batches_per_pass
        self.set_epoch(0)

    def __len__(self):
        return self.n_batches

    def _one_pass(self, p):
        if not self.shuffle:
            return np.arange(self.batches_per_pass * self.batch_size) * (self.seq_length + 1)
        rng = np.random.default_rng([self.seed, p])
        offset = int(rng.integers(0, self.seq_length + 1))
        return rng.permutation(offset + np.arange(self.batches_per_pass * self.batch_size) * (self.seq_length + 1))

    def set_epoch(self, epoch):
        """Cut epoch `epoch`'s window starts from the endless sequence of passes."""
        need, per_pass = self.n_batches * self.batch_size, self.batches_per_pass * self.batch_size
        first, end = epoch * need, (epoch + 1) * need
        passes = range(first // per_pass, (end - 1) // per_pass + 1)
        starts = np.concatenate([self._one_pass(p) for p in passes])
        self.starts = starts[first - passes[0] * per_pass:end - passes[0] * per_pass]

    def __getitem__(self, index):
        starts = self.starts[index * self.batch_size:(index + 1) * self.batch_size]
        chunk = self.ids[starts[:, None] + np.arange(self.seq_length + 1)].astype(np.int32, copy=False)
        return chunk[:, :-1], chunk[:, 1:]
