"""Training from a prepared DATA_DIR (`estella prepare`): the ids stay on disk as np.memmap.

Memory does not grow with the corpus: no array of ids, and no list of a pass's window starts, is
ever made; each batch cuts its windows from the memmap and casts only them to int32.
"""

import hashlib
import json
import mmap
import os
from dataclasses import dataclass

import numpy as np

from .data import CharWindows
from .errors import CorpusError
from .errors import RunError
from .prepare import FILES, content_digest
from .runfolder import sha256_file
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
                "content_sha256": self.meta.get("content_sha256"),
                "chars": len(self.train) + len(self.val), "train_chars": len(self.train),
                "validation_chars": len(self.val), "files": len(self.meta["sources"]),
                "validation_fraction": self.meta["validation_fraction"]}


def open_prepared(data_dir) -> Prepared:
    """The prepared folder, checked: meta.json's fields, its content hash, every id inside the vocabulary."""
    missing = [name for name in FILES if not os.path.isfile(os.path.join(data_dir, name))]
    if missing:
        raise CorpusError(f"--data {data_dir} is not a prepared data folder (missing {', '.join(missing)}); "
                          "make one with `estella prepare SOURCE... --out DIR`")
    try:
        with open(os.path.join(data_dir, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        check_meta(meta)
        dtype = np.dtype(meta["dtype"])
        train, val = (_memmap(os.path.join(data_dir, name), dtype) for name in ("train.bin", "val.bin"))
    except (ValueError, KeyError, TypeError) as e:
        raise CorpusError(f"--data {data_dir} has a broken meta.json: {e}") from None
    try:
        vocab = Vocab.load(os.path.join(data_dir, "vocab.json"))
    except RunError as e:
        raise CorpusError(f"--data {data_dir}: {e}") from None
    if len(vocab) != meta["vocab_size"] or len(train) != meta["train_chars"] or len(val) != meta["validation_chars"]:
        raise CorpusError(f"--data {data_dir} does not match its meta.json (an interrupted copy?); prepare it again")
    hashes, tops = {"vocab.json": sha256_file(os.path.join(data_dir, "vocab.json"))}, {}
    for name in ("train.bin", "val.bin"):
        hashes[name], tops[name] = _scan_ids(os.path.join(data_dir, name), dtype)
    if "content_sha256" in meta and content_digest(hashes) != meta["content_sha256"]:
        raise CorpusError(f"--data {data_dir}: its files are not the ones meta.json records (content_sha256 differs: "
                          "changed or damaged after `estella prepare`); prepare it again")
    for name, top in tops.items():
        if top >= len(vocab):
            raise CorpusError(f"--data {data_dir}: {name} holds the id {top}, outside its {len(vocab)}-character "
                              "vocabulary; prepare it again")
    return Prepared(vocab, train, val, meta, os.path.abspath(data_dir))


def check_meta(meta):
    """TypeError/ValueError naming the first meta.json field that training cannot use."""
    if not isinstance(meta, dict):
        raise TypeError("it is not a JSON object")
    if meta.get("dtype") not in ("uint8", "uint16"):
        raise ValueError(f"dtype is {meta.get('dtype')!r}, not uint8 or uint16")
    for key in ("vocab_size", "train_chars", "validation_chars"):
        if not isinstance(meta.get(key), int) or isinstance(meta[key], bool) or meta[key] < 0:
            raise ValueError(f"{key} is {meta.get(key)!r}, not a count")
    fraction = meta.get("validation_fraction")
    if not isinstance(fraction, (int, float)) or not 0 < fraction < 0.5:
        raise ValueError(f"validation_fraction is {fraction!r}, not a number in (0, 0.5)")
    sources = meta.get("sources")
    if not (isinstance(sources, list) and sources
            and all(isinstance(s, dict) and isinstance(s.get("sha256"), str) for s in sources)):
        raise ValueError("sources is not a list of files with their sha256")


def _scan_ids(path, dtype, block=1 << 24):
    """(sha256, largest id) of an ids file, read a block at a time with read(), not through the
    memmap: mapped pages once touched would stay in the process's resident memory."""
    digest, top = hashlib.sha256(), -1
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(block - block % dtype.itemsize), b""):
            digest.update(chunk)
            top = max(top, int(np.frombuffer(chunk, dtype).max()))
    return digest.hexdigest(), top


def identity(data_dir) -> dict:
    """What tells that the folder was prepared again or changed: its content hash and the files' inodes."""
    out = {}
    for name in FILES:
        try:
            st = os.stat(os.path.join(data_dir, name))
            out[name] = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
        except OSError:
            out[name] = None
    try:
        with open(os.path.join(data_dir, "meta.json"), encoding="utf-8") as f:
            out["content_sha256"] = json.load(f).get("content_sha256")
    except (OSError, ValueError, AttributeError):
        out["content_sha256"] = None
    return out


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
    It is mapped from a descriptor opened once, not by name: a folder prepared again under a running
    trainer (a new file under the old name) does not change what this run reads; train() notices
    the change at the epoch's end and stops.

    Validation (shuffle=False): fixed windows. All non-overlapping windows, as CharWindows cuts
    them, or with `steps_per_epoch` batches (--validation-steps), that many windows spread evenly
    over the whole split, so every file's held-out tail is in it.
    """

    def __init__(self, ids, seq_length, batch_size, shuffle=True, seed=0, steps_per_epoch=None, **kwargs):
        # The descriptor stays open for the process's life: a dataset lives as long as its run.
        self.fd = os.open(ids.filename, os.O_RDONLY) if isinstance(ids, np.memmap) else None
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
        windows = starts[:, None] + np.arange(self.seq_length + 1)
        if self.fd is None:
            chunk = self.ids[windows].astype(np.int32)
        else:
            with mmap.mmap(self.fd, 0, access=mmap.ACCESS_READ) as mapped:
                ids = np.frombuffer(mapped, self.ids.dtype)
                chunk = ids[windows].astype(np.int32)  # a copy: the mapping can close
                del ids
        return chunk[:, :-1], chunk[:, 1:]
