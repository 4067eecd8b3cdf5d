"""Training from a prepared DATA_DIR (`estella prepare`): the ids stay on disk as np.memmap.

Memory does not grow with the corpus: no array of ids, and no list of a pass's window starts, is
ever made; each batch cuts its windows from the memmap and casts only them to int32.
"""

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np

from .data import CharWindows
from .errors import CorpusError
from .prepare import FILES
from .vocab import Vocab


@dataclass
class Prepared:
    vocab: Vocab
    train: np.ndarray  # np.memmap, uint8 or uint16
    val: np.ndarray
    meta: dict
    path: str

    def corpus_entry(self) -> dict:
        """config.json's "corpus": the data folder, a digest of its sources' sha256, the sizes."""
        digest = hashlib.sha256("".join(s["sha256"] for s in self.meta["sources"]).encode()).hexdigest()
        return {"source": self.path, "path": self.path, "sha256": digest,
                "chars": len(self.train) + len(self.val), "train_chars": len(self.train),
                "validation_chars": len(self.val), "files": len(self.meta["sources"]),
                "validation_fraction": self.meta["validation_fraction"]}


def open_prepared(data_dir) -> Prepared:
    missing = [name for name in FILES if not os.path.isfile(os.path.join(data_dir, name))]
    if missing:
        raise CorpusError(f"--data {data_dir} is not a prepared data folder (missing {', '.join(missing)}); "
                          "make one with `estella prepare SOURCE... --out DIR`")
    try:
        with open(os.path.join(data_dir, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        vocab = Vocab.load(os.path.join(data_dir, "vocab.json"))
        dtype = np.dtype(meta["dtype"])
        train, val = (_memmap(os.path.join(data_dir, name), dtype) for name in ("train.bin", "val.bin"))
    except (ValueError, KeyError, TypeError) as e:
        raise CorpusError(f"--data {data_dir} has a broken meta.json: {e}") from None
    if len(vocab) != meta["vocab_size"] or len(train) != meta["train_chars"] or len(val) != meta["validation_chars"]:
        raise CorpusError(f"--data {data_dir} does not match its meta.json (an interrupted copy?); prepare it again")
    return Prepared(vocab, train, val, meta, os.path.abspath(data_dir))


def _memmap(path, dtype):
    # np.memmap refuses an empty file; an empty part is reported by the length checks instead.
    if not os.path.getsize(path):
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r")


class DiskWindows(CharWindows):
    """CharWindows whose memory does not depend on the length of `ids` (a memmap, or any array).

    Training (shuffle=True): each batch's windows start at random places, as nanoGPT samples them,
    drawn from a generator seeded by (seed, epoch, batch): nothing per pass is stored, and a resumed
    run at epoch e draws what an unbroken run would have. An epoch is `steps_per_epoch` batches, or
    as many as one pass of non-overlapping windows would make.

    A memmap is mapped afresh for each batch, as nanoGPT does: the pages a batch touched leave
    the process with it. Kept mapped, every window would keep its page and the kernel's read-around
    (large folios of the page cache) resident: about 90 MB after 20 batches of a 300 MB corpus.

    Validation (shuffle=False): fixed windows. All non-overlapping windows, as CharWindows cuts
    them, or with `steps_per_epoch` batches (--validation-steps), that many windows spread evenly
    over the whole split, so every file's held-out tail is in it.
    """

    def __init__(self, ids, seq_length, batch_size, shuffle=True, seed=0, steps_per_epoch=None, **kwargs):
        self.path = ids.filename if isinstance(ids, np.memmap) else None
        super().__init__(ids, seq_length, batch_size, shuffle, seed, steps_per_epoch, **kwargs)
        windows = self.n_batches * batch_size
        full = self.n_batches >= self.batches_per_pass
        self.stride = seq_length + 1 if full or windows < 2 else (len(self.ids) - seq_length - 1) // (windows - 1)

    def set_epoch(self, epoch):
        """Batches are drawn from (seed, epoch, batch): there is nothing to cut ahead, unlike CharWindows."""
        self.epoch = epoch

    def __getitem__(self, index):
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            starts = rng.integers(0, len(self.ids) - self.seq_length, self.batch_size)
        else:
            starts = (index * self.batch_size + np.arange(self.batch_size)) * self.stride
        ids = np.memmap(self.path, self.ids.dtype, "r") if self.path else self.ids
        chunk = ids[starts[:, None] + np.arange(self.seq_length + 1)].astype(np.int32)
        return chunk[:, :-1], chunk[:, 1:]
