"""Serving fixtures. No TensorFlow at import time: these tests run in the TensorFlow-free virtualenv.

serve_export is the runtime tests' real export of a tiny trained run (every format; tests/conftest.py).
"""

import pytest

from estella.serve.process import ServerProcess


@pytest.fixture(scope="session")
def serve_export(real_export):
    return real_export


@pytest.fixture(scope="session")
def start_server(serve_export):
    """start_server(*flags) -> a running ServerProcess on a free 127.0.0.1 port; all stop at the end."""
    servers = []

    def start(*flags, export=None):
        server = ServerProcess(export or serve_export, *flags).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.stop()


@pytest.fixture(scope="session")
def break_after():
    """break_after(engine, steps): the engine's real step, until after `steps` calls the interpreter
    "breaks": every later call raises RuntimeError("the interpreter broke") (fault injection)."""

    def breaking(engine, steps):
        step, calls = engine.backend.step_trusted, [0]

        def failing_step(ids, state):
            calls[0] += 1
            if calls[0] > steps:
                raise RuntimeError("the interpreter broke")
            return step(ids, state)

        engine.backend.step_trusted = failing_step

    return breaking


@pytest.fixture(scope="session")
def corpus_text(corpus_path, serve_export):
    """corpus_text(n) -> n characters of the book (repeated as needed), those outside the export's vocabulary left out."""
    from estella.runtime.manifest import load_manifest

    vocab = set(load_manifest(serve_export, verify=False)["model"]["vocab"])
    with open(corpus_path, encoding="utf-8") as f:
        book = "".join(c for c in f.read(200_000) if c in vocab)

    def text(n):
        return (book * (n // len(book) + 1))[:n]

    return text


@pytest.fixture(scope="session")
def lstm_export(tmp_path_factory):
    """A schema-2 numpy export of a 2-layer LSTM with random weights (the runtime tests' own helpers)."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "runtime", "conftest.py")
    spec = importlib.util.spec_from_file_location("runtime_test_helpers", path)
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    weights = helpers.random_stack_weights(len(helpers.VOCAB), "lstm", [16, 12])
    return helpers.write_numpy_export(str(tmp_path_factory.mktemp("lstm_export")), weights, helpers.VOCAB)
