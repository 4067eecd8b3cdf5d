"""Corpus loading: a URL (downloaded once into a cache) or a local path, Gutenberg markers stripped."""

import hashlib
import os
import re
import urllib.parse
from dataclasses import dataclass

from .errors import CorpusError

DEFAULT_CORPUS = "https://www.gutenberg.org/files/1400/1400-0.txt"

# Gutenberg wraps every book in "*** START OF ... ***" and "*** END OF ... ***" lines.
_START = re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)
_END = re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.MULTILINE | re.IGNORECASE)
# Older files also close the book with an "End of the Project Gutenberg EBook of ..." line.
_TRAILER = re.compile(r"\n\s*End of (the )?Project Gutenberg.*\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Corpus:
    text: str  # the book alone, header and footer stripped
    source: str  # the URL or path it came from
    path: str  # the local file that was read
    sha256: str  # of the raw file's bytes


def is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https")


def fetch(url: str, cache_dir: str | None = None) -> str:
    """Download `url` once into the cache (keras.utils.get_file, as the original did); return the path."""
    import keras  # only the download path needs Keras

    # The whole URL picks the cache entry: two books named book.txt on two hosts are two files.
    name = (hashlib.sha256(url.encode()).hexdigest()[:16] + "-"
            + (os.path.basename(urllib.parse.urlparse(url).path) or "corpus.txt"))
    cache_dir = os.path.abspath(cache_dir or os.environ.get("ESTELLA_CACHE", os.path.expanduser("~/.cache/estella")))
    os.makedirs(cache_dir, exist_ok=True)  # get_file silently falls back to /tmp/.keras otherwise
    try:
        return keras.utils.get_file(name, origin=url, cache_dir=cache_dir, cache_subdir="corpora")
    except Exception as e:  # get_file raises several kinds (URLError, HTTPError, OSError)
        raise CorpusError(f"could not download corpus {url}: {e}") from None


def strip_gutenberg(text: str) -> str:
    """Keep what lies between the START and END markers; a text without them is returned intact."""
    start, end = _START.search(text), _END.search(text)
    if start:
        text_start = start.end()
        text = text[text_start:end.start()] if end and end.start() > text_start else text[text_start:]
    elif end:
        text = text[:end.start()]
    if not (start or end):
        return text
    return _TRAILER.sub("", text).strip("\r\n\ufeff ") + "\n"


def load(source: str = DEFAULT_CORPUS, min_chars: int = 0, cache_dir: str | None = None) -> Corpus:
    """Read a corpus from a URL or a local path. `min_chars` is the least text the caller can use."""
    path = fetch(source, cache_dir) if is_url(source) else source
    if not os.path.isfile(path):
        raise CorpusError(f"corpus file not found: {path} (give a local path or an http(s) URL)")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"corpus {path} is not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r}); "
                          "convert it first, e.g. iconv -t UTF-8") from None
    text = strip_gutenberg(text.replace("\r\n", "\n"))
    if not text.strip():
        raise CorpusError(f"corpus {path} is empty")
    if len(set(text)) < 2:
        raise CorpusError(f"corpus {path} has only one distinct character ({text[0]!r}); a model needs at least two "
                          "to choose between")
    if len(text) < min_chars:
        raise CorpusError(f"corpus {path} has {len(text)} characters; this setup needs at least {min_chars} "
                          "(a few sequences for training and validation): use a longer text or a smaller --seq-length")
    return Corpus(text=text, source=source, path=os.path.abspath(path), sha256=hashlib.sha256(raw).hexdigest())
