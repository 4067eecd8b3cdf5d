"""Source models for the import tests, made by the real libraries (tests/imports/sources.py) in
subprocesses and cached outside the checkout (ESTELLA_TEST_CACHE, default ~/.cache/estella/tests):
the key is the writer script, the text and the library versions, so a change to any makes them anew."""

import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = os.path.join(HERE, "sources.py")
TF_KERAS_MODES = ("chapter-checkpoint", "chapter-lstm-checkpoint", "keras2-h5", "refused-checkpoints")


@pytest.fixture(scope="session")
def source_text(corpus_path, tmp_path_factory):
    """12,000 characters from the middle of the book, in a temp file (never committed)."""
    with open(corpus_path, encoding="utf-8") as f:
        text = f.read(62_000)[50_000:]
    path = tmp_path_factory.mktemp("source-text") / "book.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _key(text_file):
    digest = hashlib.sha256()
    for path in (SOURCES, text_file):
        with open(path, "rb") as f:
            digest.update(f.read())
    for dist in ("tensorflow-cpu", "tensorflow", "keras", "tf-keras"):
        try:
            digest.update(f"{dist}={importlib.metadata.version(dist)};".encode())
        except importlib.metadata.PackageNotFoundError:
            pass
    return digest.hexdigest()[:16]


def make_source(mode, text_file):
    """The folder sources.py MODE wrote (cached)."""
    if mode in TF_KERAS_MODES and importlib.util.find_spec("tf_keras") is None:
        pytest.fail("tf-keras is not installed in this virtualenv; `make venv` installs it "
                    "(pip install --no-deps 'tf-keras>=2.21,<2.22', see pyproject.toml's keras2 extra)")
    cache = os.environ.get("ESTELLA_TEST_CACHE", os.path.expanduser("~/.cache/estella/tests"))
    out = os.path.join(cache, "import-sources", _key(text_file), mode)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".lock", "w") as lock:  # two suites on one machine: the first makes it, the other waits
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(os.path.join(out, "greedy.json")):
            _make_source(mode, text_file, out)
    return out


def _make_source(mode, text_file, out):
    tmp = tempfile.mkdtemp(prefix=f".{mode}-", dir=os.path.dirname(out))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    if mode in TF_KERAS_MODES:
        env["TF_USE_LEGACY_KERAS"] = "1"  # tf.keras is tf-keras (Keras 2), as the chapter ran
    else:
        env.pop("TF_USE_LEGACY_KERAS", None)
    result = subprocess.run([sys.executable, SOURCES, mode, tmp, text_file], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.fail(f"sources.py {mode} failed:\n{result.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)  # a half-made one of a killed run, if any
    os.replace(tmp, out)


@pytest.fixture(scope="session")
def chapter_source(source_text):
    return make_source("chapter-checkpoint", source_text)


@pytest.fixture(scope="session")
def chapter_lstm_source(source_text):
    return make_source("chapter-lstm-checkpoint", source_text)


@pytest.fixture(scope="session")
def h5_source(source_text):
    return make_source("keras2-h5", source_text)


@pytest.fixture(scope="session")
def lstm_source(source_text):
    return make_source("keras3-lstm", source_text)


@pytest.fixture(scope="session")
def keras_gru_source(source_text):
    return make_source("keras3-gru", source_text)


@pytest.fixture(scope="session")
def refused_sources(source_text):
    return make_source("refused-checkpoints", source_text)


@pytest.fixture(scope="session")
def chapter_run(chapter_source, source_text, tmp_path_factory):
    """The chapter's checkpoint imported into a run directory (shared: copy it before changing it)."""
    from estella.build.importer import import_model

    run = str(tmp_path_factory.mktemp("imported") / "book")
    import_model(os.path.join(chapter_source, "checkpoints"), run, source_text, log=lambda *a: None)
    return run
