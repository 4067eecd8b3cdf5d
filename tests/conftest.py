"""Shared test fixtures. This file must not import TensorFlow: the runtime-only virtualenv loads it too."""

import importlib.util
import os
import signal
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The corpus lives outside the repo and is never committed (see README).
CORPUS = os.path.abspath(os.path.join(REPO, "..", "shared", "data", "great-expectations.txt"))
EXPORT_ENV = "ESTELLA_RUNTIME_EXPORT"

# A suite started as a background job (`make test &`, nohup) inherits SIGINT ignored, and so would
# every process it starts (POSIX keeps an ignored signal ignored across exec). The tests that press
# Ctrl-C on a child want it taken as a terminal's foreground job takes it: with SIGINT handled here,
# each child starts with the default action.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def corpus_path():
    if not os.path.exists(CORPUS):
        pytest.fail(f"the test corpus is missing: {CORPUS} (tests read it from ../shared/data/)")
    return CORPUS


@pytest.fixture(scope="session")
def corpus_slice(corpus_path, tmp_path_factory):
    """The first 60,000 characters of the book, with its Gutenberg header, in a temp file."""
    with open(corpus_path, encoding="utf-8") as f:
        text = f.read(60_000)
    path = tmp_path_factory.mktemp("corpus") / "slice.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def tiny_run(corpus_slice, tmp_path_factory):
    """A run of the `tiny` preset trained for two short epochs: a real, small trained model."""
    from estella.build.train import train

    run_dir = str(tmp_path_factory.mktemp("runs") / "tiny")
    train(run_dir, corpus_slice, "tiny", verbose=0)
    return run_dir


@pytest.fixture(scope="session")
def tiny_lstm_run(corpus_slice, tmp_path_factory):
    """The same for a stack: the `tiny-lstm` preset (2 x 32 LSTM, dropout 0.1), two short epochs."""
    from estella.build.train import train

    run_dir = str(tmp_path_factory.mktemp("runs") / "tiny-lstm")
    train(run_dir, corpus_slice, "tiny-lstm", verbose=0)
    return run_dir


@pytest.fixture(scope="session")
def real_export(request, tmp_path_factory):
    """A real `estella export` of a tiny trained run (every format). In the TensorFlow-free
    virtualenvs it is the folder named by ESTELLA_RUNTIME_EXPORT, made beforehand in the main one
    (tests/runtime/make_fixture_export.py); a name that is set but missing fails, it never skips."""
    given = os.environ.get(EXPORT_ENV)
    if given:
        if not os.path.isfile(os.path.join(given, "manifest.json")):
            pytest.fail(f"{EXPORT_ENV}={given} has no manifest.json: make it with "
                        "tests/runtime/make_fixture_export.py (make test does)")
        return given
    if importlib.util.find_spec("tensorflow") is None:
        pytest.fail(f"this virtualenv has no TensorFlow to export a run: set {EXPORT_ENV} to an export "
                    "made by tests/runtime/make_fixture_export.py (make test does)")
    sys.path.insert(0, os.path.join(REPO, "tests", "runtime"))
    from make_fixture_export import export_tiny_run

    return export_tiny_run(request.getfixturevalue("tiny_run"), str(tmp_path_factory.mktemp("export") / "tiny"))
