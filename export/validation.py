"""The run's validation text: the characters the model never trained on, and where they lie in the
corpus file, so that the runtime (`estella evaluate`, without TensorFlow or the build stage) can
read them again: manifest provenance.validation_text = {path, sha256, start, chars}.

`start` and `chars` count characters of the file as `estella.runtime.evaluate.decode_text` reads it
(as the corpus loader does before it cuts the Gutenberg header and footer); `sha256` is the file's.
"""

from estella.build.corpus import load as load_corpus
from estella.build.data import split
from estella.runtime.errors import EstellaError
from estella.runtime.evaluate import decode_text

MAX_CHARS = 100_000  # the manifest's bpc is measured on at most this much of it


def training_ids(cfg, vocab):
    """The run's training text as ids (what the int8-full file is calibrated on), or None for a run
    without its corpus file, or whose file changed since training."""
    path = cfg["corpus"].get("path")
    if not path:
        return None
    try:
        corpus = load_corpus(path)
        if corpus.sha256 != cfg["corpus"].get("sha256"):
            return None
        return split(vocab.encode(corpus.text), cfg["hparams"].validation_fraction)[0]
    except (EstellaError, ValueError):
        return None


def validation_text(cfg, vocab, max_chars=MAX_CHARS):
    """(ids [N], named) of the start of the run's validation text; named is None where it cannot be
    found again in the file; (None, None) for a run without its corpus (moved, changed, or none)."""
    path = cfg["corpus"].get("path")
    if not path:
        return None, None
    try:
        corpus = load_corpus(path)
        ids = split(vocab.encode(corpus.text), cfg["hparams"].validation_fraction)[1][:max_chars]
    except (EstellaError, ValueError):  # the corpus moved, or has characters the run never saw
        return None, None
    if corpus.sha256 != cfg["corpus"].get("sha256") or len(ids) < 2:
        return None, None  # not the text it was trained on: its tail is not the validation text
    with open(corpus.path, "rb") as f:
        file_text = decode_text(f.read())
    text = vocab.decode(ids)
    start = file_text.rfind(text)
    if start < 0 and text.endswith("\n"):  # the loader ends a stripped book with a newline of its own
        ids, text = ids[:-1], text[:-1]
        start = file_text.rfind(text)
    named = {"path": corpus.path, "sha256": corpus.sha256, "start": start, "chars": len(text)} if start >= 0 else None
    return ids, named
