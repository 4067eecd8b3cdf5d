"""`estella prepare`: text files, URLs, folders and globs -> train.bin / val.bin on disk, as nanoGPT does.

DATA_DIR:
    train.bin, val.bin   the ids, one after the other: uint8 where the vocabulary has <= 256
                         characters, else uint16; read back with np.memmap
    vocab.json           the vocabulary: the sorted characters of all sources
    meta.json            the sources (path, sha256, bytes, characters, split), the dtype, the totals

Each file is cut at its own Gutenberg markers and split on its own: its last `validation_fraction`
goes to val.bin, so every book is in both parts. Files are read one at a time, twice (once for the
vocabulary, once to encode), so memory follows the largest file, never the corpus. Encoding is a
numpy lookup table indexed by code point: no Python loop over characters.
"""

import glob
import hashlib
import os
import shutil
import tempfile
import time

import numpy as np

from .corpus import fetch, is_url, strip_gutenberg
from .errors import CorpusError
from .fileio import write_json
from .vocab import Vocab

# Characters per numpy conversion: bounds the UTF-32 copy (4 bytes a character) of a large file.
CHUNK_CHARS = 1 << 20
FILES = ("train.bin", "val.bin", "vocab.json", "meta.json")


def expand_sources(sources, cache_dir=None):
    """[(source, local path)] for files, URLs, folders (their *.txt, recursively) and globs, in order."""
    out = []
    for source in sources:
        if is_url(source):
            paths = [fetch(source, cache_dir)]
        elif os.path.isdir(source):
            paths = sorted(glob.glob(os.path.join(glob.escape(source), "**", "*.txt"), recursive=True))
            if not paths:
                raise CorpusError(f"folder {source} has no .txt files")
        elif os.path.isfile(source):
            paths = [source]
        elif glob.has_magic(source):
            paths = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p))
            if not paths:
                raise CorpusError(f"the pattern {source} matches no files")
        else:
            raise CorpusError(f"corpus source not found: {source} (give files, folders, globs or http(s) URLs)")
        out += [(source, os.path.abspath(p)) for p in paths]
    if not out:
        raise CorpusError("no corpus sources given")
    seen = set()
    return [(s, p) for s, p in out if not (p in seen or seen.add(p))]


def read_text(path, span=None):
    """(text, sha256 of the raw bytes, raw size, span): the text corpus.load would train on (CRLF as LF,
    Gutenberg header and footer cut). `span` (start, stop, newline) places that text in the decoded
    file; pass 2 gives back pass 1's span and so skips the marker search, the slowest step."""
    with open(path, "rb") as f:
        raw = f.read()
    sha, size = hashlib.sha256(raw).hexdigest(), len(raw)
    try:
        full = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r}); "
                          "convert it first, e.g. iconv -t UTF-8, or leave it out") from None
    del raw  # one copy of the file at a time: memory follows the largest file
    if "\r" in full:
        full = full.replace("\r\n", "\n")
    if span is None:
        kept = strip_gutenberg(full) if "***" in full else full  # a quick look before the regexes
        # strip_gutenberg only cuts both ends, and adds a final newline where it cut.
        span = (0, len(full), False) if kept is full else (full.find(kept[:-1]), None, True)
        span = (span[0], span[0] + len(kept) - 1, True) if span[2] else span
    start, stop, newline = span
    text = full[start:stop] + ("\n" if newline else "")
    if not text.strip():
        raise CorpusError(f"{path} has no text (after cutting its Gutenberg header and footer)")
    return text, sha, size, span


def chunks(text):
    """The text a chunk at a time: ASCII as bytes, anything else as uint32 code points."""
    for i in range(0, len(text), CHUNK_CHARS):
        part = text[i:i + CHUNK_CHARS]
        yield part.encode("ascii") if part.isascii() else np.frombuffer(part.encode("utf-32-le"), np.uint32)


def present(chunk):
    """The code points that occur in a chunk: a count per code point, no sort."""
    return np.flatnonzero(np.bincount(np.frombuffer(chunk, np.uint8) if isinstance(chunk, bytes) else chunk))


def encode(chunk, table, ascii_table=None):
    """ids of a chunk: bytes.translate for ASCII into uint8 ids (C speed), else the code point table."""
    if isinstance(chunk, bytes):
        if ascii_table is not None:
            return np.frombuffer(chunk.translate(ascii_table), np.uint8)
        chunk = np.frombuffer(chunk, np.uint8)
    return table[chunk]


def lookup_table(vocab: Vocab, dtype):
    """ids indexed by code point; code points outside the vocabulary never occur (the vocabulary is
    made from the same texts)."""
    points = np.array([ord(c) for c in vocab.chars], np.int64)
    table = np.zeros(int(points.max()) + 1, dtype)
    table[points] = np.arange(len(points))
    return table


def ids_dtype(vocab_size):
    if vocab_size <= 256:
        return np.uint8
    if vocab_size <= 65536:
        return np.uint16
    raise CorpusError(f"the corpus has {vocab_size} distinct characters; at most 65536 fit uint16 ids")


def prepare(sources, out_dir, validation_fraction=0.1, force=False, cache_dir=None, log=print):
    """Write DATA_DIR from the sources; return meta.json's dict. Nothing appears at out_dir unless
    all of it is written (it is built in a temp folder beside it and renamed)."""
    if not 0 < validation_fraction < 0.5:
        raise CorpusError(f"--validation-fraction must be in (0, 0.5), got {validation_fraction}")
    if os.path.exists(out_dir):
        if not force:
            raise CorpusError(f"{out_dir} exists; give --force to replace it, or another --out")
        extra = sorted(set(os.listdir(out_dir)) - set(FILES)) if os.path.isdir(out_dir) else [out_dir]
        if extra:
            raise CorpusError(f"{out_dir} is not a prepared data folder (it holds {extra[:5]}); not replacing it")
    started = time.perf_counter()
    files = expand_sources(sources, cache_dir)

    # Pass 1: validate every file and collect the characters, before anything is written.
    seen = np.zeros(0x110000, bool)
    entries = []
    for source, path in files:
        text, sha, size, span = read_text(path)
        for chunk in chunks(text):
            seen[present(chunk)] = True
        n_val = int(len(text) * validation_fraction)
        entries.append({"source": source, "path": path, "sha256": sha, "bytes": size, "chars": len(text),
                        "train_chars": len(text) - n_val, "validation_chars": n_val, "span": span})
    vocab = Vocab(chr(c) for c in np.flatnonzero(seen))
    dtype = ids_dtype(len(vocab))
    table = lookup_table(vocab, dtype)
    # uint8 ids: ASCII chunks go through bytes.translate with this 256-byte table.
    ascii_table = bytes(np.resize(table, 256)[:256].astype(np.uint8)) if dtype == np.uint8 else None

    # Pass 2: encode each file and append its two parts.
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-prepare-", dir=parent)
    try:
        with open(os.path.join(tmp, "train.bin"), "wb") as train_f, open(os.path.join(tmp, "val.bin"), "wb") as val_f:
            for entry in entries:
                text, sha, _, _ = read_text(entry["path"], entry.pop("span"))
                if sha != entry["sha256"]:
                    raise CorpusError(f"{entry['path']} changed while it was being prepared")
                done = 0
                for chunk in chunks(text):
                    ids = encode(chunk, table, ascii_table)
                    cut = min(max(entry["train_chars"] - done, 0), len(ids))
                    train_f.write(ids[:cut].tobytes())
                    val_f.write(ids[cut:].tobytes())
                    done += len(ids)
        vocab.save(os.path.join(tmp, "vocab.json"))
        seconds = time.perf_counter() - started
        total_bytes = sum(e["bytes"] for e in entries)
        meta = {"dtype": np.dtype(dtype).name, "vocab_size": len(vocab), "validation_fraction": validation_fraction,
                "train_chars": sum(e["train_chars"] for e in entries),
                "validation_chars": sum(e["validation_chars"] for e in entries),
                "bytes": total_bytes, "seconds": round(seconds, 3),
                "mb_per_s": round(total_bytes / 1e6 / seconds, 1) if seconds else None, "sources": entries}
        write_json(os.path.join(tmp, "meta.json"), meta)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"prepared {len(entries)} file(s), {meta['bytes'] / 1e6:.1f} MB -> {out_dir}: V={len(vocab)} "
        f"{meta['dtype']}, train {meta['train_chars']:,} chars, val {meta['validation_chars']:,} chars "
        f"({meta['mb_per_s']} MB/s)")
    return meta
