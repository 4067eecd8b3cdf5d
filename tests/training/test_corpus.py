import functools
import http.server
import threading

import pytest

from estella.build.corpus import load, strip_gutenberg
from estella.build.errors import CorpusError

BOOK = "It was the best of times.\nIt was the worst of times.\n"
WRAPPED = ("The Project Gutenberg eBook of Something\n\n*** START OF THE PROJECT GUTENBERG EBOOK SOMETHING ***\n\n"
           + BOOK + "\n*** END OF THE PROJECT GUTENBERG EBOOK SOMETHING ***\n\nLicence text follows.\n")


def test_markers_are_stripped(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(WRAPPED, encoding="utf-8")
    assert load(str(path)).text == BOOK


def test_text_without_markers_is_left_intact(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("  no markers here\n\n", encoding="utf-8")
    assert load(str(path)).text == "  no markers here\n\n"


def test_real_book_is_cut_at_its_markers(corpus_path):
    corpus = load(corpus_path)
    # The novel starts at character 834 of the file; the header before it is gone.
    assert corpus.text.index("My father's family name being Pirrip") < 400
    assert "*** START OF" not in corpus.text and "*** END OF" not in corpus.text
    assert "Gutenberg-tm" not in corpus.text  # the licence
    assert corpus.text.rstrip().endswith("parting from her.")
    assert len(corpus.sha256) == 64


def test_crlf_is_normalised(tmp_path):
    path = tmp_path / "dos.txt"
    path.write_bytes(WRAPPED.replace("\n", "\r\n").encode())
    assert load(str(path)).text == BOOK


def test_bad_encoding_names_the_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin1\.txt is not UTF-8"):
        load(str(path))


def test_empty_text(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\n")
    with pytest.raises(CorpusError, match="is empty"):
        load(str(path))


def test_too_short(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text(BOOK)
    with pytest.raises(CorpusError, match=r"has 53 characters; this setup needs at least 1000"):
        load(str(path), min_chars=1000)


def test_missing_file(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        load(str(tmp_path / "nope.txt"))


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_once_into_cache(http_root, tmp_path):
    root, base = http_root
    (root / "book.txt").write_text(WRAPPED, encoding="utf-8")
    cache = tmp_path / "cache"
    first = load(f"{base}/book.txt", cache_dir=str(cache))
    assert first.text == BOOK and first.path.startswith(str(cache))
    (root / "book.txt").unlink()  # the second load must come from the cache
    assert load(f"{base}/book.txt", cache_dir=str(cache)).text == BOOK


def test_download_failure_names_the_url(http_root, tmp_path):
    _, base = http_root
    with pytest.raises(CorpusError, match=r"could not download corpus http://127\.0\.0\.1:\d+/missing\.txt"):
        load(f"{base}/missing.txt", cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("text", ["abc", "\ufeffabc"])
def test_strip_keeps_unmarked_text(text):
    assert strip_gutenberg(text) == text
