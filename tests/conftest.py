"""Shared test fixtures. This file must not import TensorFlow: the runtime-only virtualenv loads it too."""

import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The corpus lives outside the repo and is never committed (see README).
CORPUS = os.path.abspath(os.path.join(REPO, "..", "shared", "data", "great-expectations.txt"))


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
