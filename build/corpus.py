"""Corpus loading: a URL (downloaded once into a cache) or a local path, Gutenberg markers stripped."""

import hashlib
import http.client
import os
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass

from .errors import CorpusError
from .fileio import atomic_path, describe_os_error, kill_point, remove_dead_temps, temp_prefix

DOWNLOAD_PREFIX = ".tmp-download-"
DOWNLOAD_TIMEOUT = 60  # seconds without a byte before a download is given up

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


def cache_path(url: str, cache_dir: str | None = None) -> str:
    """The cache entry of a URL: the whole URL picks it, so two books named book.txt on two hosts are two files."""
    name = (hashlib.sha256(url.encode()).hexdigest()[:16] + "-"
            + (os.path.basename(urllib.parse.urlparse(url).path) or "corpus.txt"))
    cache_dir = os.path.abspath(cache_dir or os.environ.get("ESTELLA_CACHE", os.path.expanduser("~/.cache/estella")))
    return os.path.join(cache_dir, "corpora", name)


def fetch(url: str, cache_dir: str | None = None) -> str:
    """Download `url` once into the cache; return the path.

    The body goes to a temp file beside the entry (named with this process's id), is checked
    against Content-Length and for being non-empty, fsynced and only then renamed to the entry:
    a download that is cut off or killed never leaves a file under the entry's name, and the temp
    files of dead processes are removed by the next download into the folder."""
    path = cache_path(url, cache_dir)
    if os.path.isfile(path):
        return path
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        remove_dead_temps(folder, DOWNLOAD_PREFIX)
        with atomic_path(path, prefix=temp_prefix(DOWNLOAD_PREFIX)) as tmp, open(tmp, "wb") as out:
            _download(url, out)
    except CorpusError:
        raise
    except OSError as e:  # urllib's URLError and HTTPError are OSErrors, as are timeouts and disk errors
        raise CorpusError(f"could not download corpus {url}: {describe_os_error(e, path)}") from None
    except http.client.HTTPException as e:  # IncompleteRead: the connection ended inside the body
        raise CorpusError(f"could not download corpus {url}: {type(e).__name__} ({e}); try again") from None
    return path


def _download(url, out):
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
        declared = response.headers.get("Content-Length")
        size = 0
        for block in iter(lambda: response.read(1 << 16), b""):
            out.write(block)
            size += len(block)
            kill_point("download-body")
        out.flush()
        os.fsync(out.fileno())
    if declared is not None and declared.isdigit() and size != int(declared):
        raise CorpusError(f"could not download corpus {url}: the connection ended after {size:,} of "
                          f"{int(declared):,} bytes; try again")
    if size == 0:
        raise CorpusError(f"could not download corpus {url}: the server sent an empty file")


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
