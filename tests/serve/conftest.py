"""Serving fixtures. No TensorFlow at import time: these tests run in the TensorFlow-free virtualenv.

serve_export is the runtime tests' real export of a tiny trained run (every format): the folder
named by ESTELLA_RUNTIME_EXPORT (make test makes it), else exported here with TensorFlow.
"""

import importlib.util
import os
import sys

import pytest

from estella.serve.process import ServerProcess

HERE = os.path.dirname(os.path.abspath(__file__))
EXPORT_ENV = "ESTELLA_RUNTIME_EXPORT"


@pytest.fixture(scope="session")
def serve_export(request, tmp_path_factory):
    given = os.environ.get(EXPORT_ENV)
    if given:
        if not os.path.isfile(os.path.join(given, "manifest.json")):
            pytest.fail(f"{EXPORT_ENV}={given} has no manifest.json: make it with "
                        "tests/runtime/make_fixture_export.py (make test does)")
        return given
    if importlib.util.find_spec("tensorflow") is None:
        pytest.fail(f"this virtualenv has no TensorFlow to export a run: set {EXPORT_ENV} to an export "
                    "made by tests/runtime/make_fixture_export.py (make test does)")
    sys.path.insert(0, os.path.join(HERE, "..", "runtime"))
    from make_fixture_export import export_tiny_run

    return export_tiny_run(request.getfixturevalue("tiny_run"), str(tmp_path_factory.mktemp("export") / "tiny"))


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
