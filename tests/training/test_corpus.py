import functools
import http.server
import os
import subprocess
import sys
import threading

import pytest

from estella.build.corpus import cache_path, load, strip_gutenberg
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


class _Cut(http.server.BaseHTTPRequestHandler):
    """Declares 10,000 bytes and sends `sent` of them (0: an empty file, honestly declared)."""
    sent = 5000

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(10_000 if self.sent else 0))
        self.end_headers()
        self.wfile.write(b"x" * self.sent)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def cut_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Cut)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("sent, message", [(5000, "ended after 5,000 of 10,000 bytes|IncompleteRead"),
                                           (0, "the server sent an empty file")])
def test_a_cut_or_empty_download_leaves_no_cache_entry(cut_server, tmp_path, monkeypatch, sent, message):
    monkeypatch.setattr(_Cut, "sent", sent)
    _, base = cut_server
    cache = tmp_path / "cache"
    with pytest.raises(CorpusError, match=message):
        load(f"{base}/book.txt", cache_dir=str(cache))
    assert os.listdir(cache / "corpora") == []  # no entry, no temp file


def test_a_download_killed_midway_is_never_used_and_is_cleaned_up(http_root, tmp_path):
    """kill -9 inside the body: no file appears under the entry's name, the rerun downloads the
    whole book, and the dead process's temp file goes."""
    root, base = http_root
    (root / "book.txt").write_text(WRAPPED * 2000, encoding="utf-8")  # several blocks of 64 KiB
    cache, url = str(tmp_path / "cache"), f"{base}/book.txt"
    code = f"from estella.build.corpus import fetch; fetch({url!r}, {cache!r})"
    killed = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, ESTELLA_TEST_KILL_AT="download-body"),
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    entry = cache_path(url, cache)
    left = os.listdir(os.path.dirname(entry))
    assert not os.path.exists(entry) and len(left) == 1 and left[0].startswith(".tmp-download-")
    load(url, cache_dir=cache)
    with open(entry, "rb") as f:
        assert f.read() == (root / "book.txt").read_bytes()
    assert os.listdir(os.path.dirname(entry)) == [os.path.basename(entry)]
