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

import contextlib
import fcntl
import fnmatch
import glob
import hashlib
import os
import shutil
import stat
import tempfile
import time

import numpy as np

from .corpus import fetch, is_url, strip_gutenberg
from .errors import CorpusError
from .fileio import describe_os_error, kill_point, remove_dead_temps, temp_prefix, write_json
from .runfolder import sha256_file
from .vocab import Vocab

# Characters per numpy conversion: bounds the UTF-32 copy (4 bytes a character) of a large file.
CHUNK_CHARS = 1 << 20
FILES = ("train.bin", "val.bin", "vocab.json", "meta.json")
HASHED = ("train.bin", "val.bin", "vocab.json")  # what training reads, in meta.json's content_sha256
TMP_PREFIX = ".tmp-prepare-"  # + pid: the folder a prepare builds before renaming it to --out


def expand_sources(sources, cache_dir=None, log=print):
    """[(source, local path)] for files, URLs, folders (their *.txt, recursively) and globs, in order.

    Folders are walked following links but never into a folder twice (a link `x -> .` is no cycle);
    a name that is not a regular file (a FIFO, a folder or a dangling link named *.txt) is skipped
    with a line saying so; a file reached through two names is read once."""
    out = []
    for source in sources:
        if is_url(source):
            paths = [fetch(source, cache_dir)]
        elif os.path.isdir(source):
            paths = [p for p in walk_files(source) if p.endswith(".txt")]
            if not paths:
                raise CorpusError(f"folder {source} has no .txt files")
        elif os.path.lexists(source):
            paths = [source]
            reason = not_a_file(source)
            if reason:
                raise CorpusError(f"corpus source {source} is {reason}; give text files, folders, globs or URLs")
        elif glob.has_magic(source):
            paths = sorted(glob_files(source))
            if not paths:
                raise CorpusError(f"the pattern {source} matches no files")
        else:
            raise CorpusError(f"corpus source not found: {source} (give files, folders, globs or http(s) URLs)")
        out += [(source, os.path.abspath(p)) for p in paths]
    if not out:
        raise CorpusError("no corpus sources given")
    kept, seen = [], set()
    for source, path in out:
        reason = not_a_file(path)
        if reason:
            log(f"skipping {path}: it is {reason}")
            continue
        st = os.stat(path)
        if (st.st_dev, st.st_ino) not in seen:  # the same file through a link or a second name
            seen.add((st.st_dev, st.st_ino))
            kept.append((source, path))
    if not kept:
        raise CorpusError(f"no regular text files among the sources {' '.join(sources)}")
    return kept


def not_a_file(path):
    """Why `path` cannot be read as a text file (None if it can): only regular files are ever opened,
    so a FIFO or a device never blocks the command."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a dangling link" if os.path.islink(path) else "missing"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    return "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"


def walk_files(top):
    """Every name under `top` that is not a folder, sorted, following links into folders once each
    (by st_dev, st_ino), so a link to a parent is no cycle."""
    seen, out = set(), []
    for root, dirs, files in os.walk(top, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        out += [os.path.join(root, name) for name in files]
    return sorted(out)


def glob_files(pattern):
    """glob with `**`, without following a link into a folder it has seen (glob.glob would loop)."""
    if "**" not in pattern:
        return glob.glob(pattern)
    head = pattern.split("**", 1)[0]
    roots = glob.glob(head) if glob.has_magic(head) else [head or "."]
    wanted = (pattern, pattern.replace("**/", "").replace("**" + os.sep, ""))
    return [path for root in roots if os.path.isdir(root) for path in walk_files(root)
            if any(fnmatch.fnmatchcase(os.path.normpath(path), os.path.normpath(w)) for w in wanted)]


def read_text(path, span=None):
    """(text, sha256 of the raw bytes, raw size, span): the text corpus.load would train on (CRLF as LF,
    Gutenberg header and footer cut). `span` (start, stop, newline) places that text in the decoded
    file; pass 2 gives back pass 1's span and so skips the marker search, the slowest step."""
    raw = read_regular_file(path)
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


def read_regular_file(path) -> bytes:
    """The bytes of `path`, refusing anything but a regular file on the open descriptor itself (a
    name swapped for a FIFO after the walk must not block the command)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror}") from None
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorpusError(f"{path} is not a regular file; leave it out")
        return f.read()


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
    check_target(out_dir, force)
    started = time.perf_counter()
    files = expand_sources(sources, cache_dir, log)
    parent = os.path.dirname(os.path.abspath(out_dir))
    try:  # before the long read: an --out under a file or on a read-only disk is answered at once
        os.makedirs(parent, exist_ok=True)
        remove_dead_temps(parent, TMP_PREFIX)  # what killed prepares left here
        tmp = tempfile.mkdtemp(prefix=temp_prefix(TMP_PREFIX), dir=parent)
    except OSError as e:
        raise CorpusError(f"cannot write --out {out_dir}: {describe_os_error(e, parent)}") from None
    try:
        entries, vocab = scan(files, validation_fraction)
        meta = write_prepared(tmp, entries, vocab, validation_fraction, started)
        kill_point("prepare-written")
        install(tmp, out_dir, force)
    except OSError as e:
        raise CorpusError(f"cannot write --out {out_dir}: {describe_os_error(e, tmp)}; nothing was replaced") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"prepared {len(entries)} file(s), {meta['bytes'] / 1e6:.1f} MB -> {out_dir}: V={len(vocab)} "
        f"{meta['dtype']}, train {meta['train_chars']:,} chars, val {meta['validation_chars']:,} chars "
        f"({meta['mb_per_s']} MB/s)")
    return meta


def check_target(out_dir, force):
    """Refuse an existing out_dir without --force, and with it anything but a prepared folder: prepare
    never deletes a file it did not write."""
    if not os.path.lexists(out_dir):
        return
    if not force:
        raise CorpusError(f"{out_dir} exists; give --force to replace it, or another --out")
    if os.path.islink(out_dir) or not os.path.isdir(out_dir):
        raise CorpusError(f"{out_dir} is not a prepared data folder (it is not a folder); not replacing it")
    extra = sorted(set(os.listdir(out_dir)) - set(FILES))
    if extra:
        raise CorpusError(f"{out_dir} is not a prepared data folder (it holds {extra[:5]}); not replacing it")
    if data_in_use(out_dir):
        raise CorpusError(f"{out_dir} is being read by a training run (estella train --data); replace it once "
                          "that run has finished, or prepare into another --out")


def scan(files, validation_fraction):
    """Pass 1: read and check every file and collect the characters. Returns (entries, vocab)."""
    seen = np.zeros(0x110000, bool)
    entries = []
    for source, path in files:
        text, sha, size, span = read_text(path)
        for chunk in chunks(text):
            seen[present(chunk)] = True
        n_val = int(len(text) * validation_fraction)
        entries.append({"source": source, "path": path, "sha256": sha, "bytes": size, "chars": len(text),
                        "train_chars": len(text) - n_val, "validation_chars": n_val, "span": span})
    return entries, Vocab(chr(c) for c in np.flatnonzero(seen))


def write_prepared(folder, entries, vocab, validation_fraction, started):
    """Pass 2: encode each file and append its two parts; then vocab.json and meta.json (last)."""
    dtype = ids_dtype(len(vocab))
    table = lookup_table(vocab, dtype)
    # uint8 ids: ASCII chunks go through bytes.translate with this 256-byte table.
    ascii_table = bytes(np.resize(table, 256)[:256].astype(np.uint8)) if dtype == np.uint8 else None
    with open(os.path.join(folder, "train.bin"), "wb") as train_f, open(os.path.join(folder, "val.bin"), "wb") as val_f:
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
        for f in (train_f, val_f):
            f.flush()
            os.fsync(f.fileno())
    vocab.save(os.path.join(folder, "vocab.json"))
    seconds = time.perf_counter() - started
    total_bytes = sum(e["bytes"] for e in entries)
    meta = {"dtype": np.dtype(dtype).name, "vocab_size": len(vocab), "validation_fraction": validation_fraction,
            "train_chars": sum(e["train_chars"] for e in entries),
            "validation_chars": sum(e["validation_chars"] for e in entries),
            "bytes": total_bytes, "seconds": round(seconds, 3),
            "mb_per_s": round(total_bytes / 1e6 / seconds, 1) if seconds else None, "sources": entries,
            "content_sha256": content_sha256(folder)}
    write_json(os.path.join(folder, "meta.json"), meta)
    return meta


def content_sha256(folder) -> str:
    """One hash of what training reads (the ids and the vocabulary): a run records it at its start and
    checks it every epoch, so a folder prepared again under a running trainer is caught."""
    return content_digest({name: sha256_file(os.path.join(folder, name)) for name in HASHED})


def content_digest(hashes: dict) -> str:
    """content_sha256 from the sha256 of each file in HASHED."""
    return hashlib.sha256("".join(f"{name}\0{hashes[name]}\n" for name in HASHED).encode()).hexdigest()


def install(tmp, out_dir, force):
    """Rename the finished folder onto out_dir. An old prepared folder (--force) is checked again,
    since files may have appeared in it (or out_dir itself) while this prepare ran."""
    if os.path.lexists(out_dir):
        if not force:
            raise CorpusError(f"{out_dir} appeared while preparing; nothing was replaced (give --force to "
                              "replace it, or another --out)")
        check_target(out_dir, force)
        old = tempfile.mkdtemp(prefix=temp_prefix(TMP_PREFIX), dir=os.path.dirname(os.path.abspath(out_dir)))
        os.replace(out_dir, os.path.join(old, "old"))
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def data_in_use(data_dir) -> bool:
    """True while a trainer reads data_dir: it holds a shared lock on its meta.json (reading_lock)."""
    try:
        fd = os.open(os.path.join(data_dir, "meta.json"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def reading_lock(data_dir):
    """Held by `estella train --data` for the whole run, so that `prepare --force` refuses the folder
    meanwhile (data_in_use). flock locks go with the process: a killed trainer leaves none."""
    try:
        fd = os.open(os.path.join(data_dir, "meta.json"), os.O_RDONLY)
    except OSError:
        yield  # open_prepared names what is missing
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # prepare only ever holds LOCK_EX for an instant, to test
        yield
    finally:
        os.close(fd)
