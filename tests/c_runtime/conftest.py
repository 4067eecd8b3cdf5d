"""The C runtime (runtime/c) built with the real compiler against the real libLiteRt.so of the
ai-edge-litert wheel installed here, once per session. Its build dependencies (a C compiler,
libcjson-dev, libssl-dev) are installed by `make c-runtime-deps`, which `make test` runs; where they
are missing the build fails with make's own message, it is never skipped."""

import importlib.util
import os
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCES = os.path.join(REPO, "runtime", "c")


def litert_dir():
    """The folder of the installed ai_edge_litert package, which holds libLiteRt.so."""
    spec = importlib.util.find_spec("ai_edge_litert")
    if spec is None or spec.origin is None:
        pytest.fail("ai-edge-litert is not installed here: the C runtime links its libLiteRt.so "
                    "(pip install 'estella[tflite]')")
    return os.path.dirname(spec.origin)


@pytest.fixture(scope="session")
def c_build(tmp_path_factory):
    """The folder with estella-c, rng-check and exp-check, freshly built."""
    build = str(tmp_path_factory.mktemp("c-runtime"))
    done = subprocess.run(["make", "-C", SOURCES, f"BUILD={build}", f"LITERT_DIR={litert_dir()}"],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"building the C runtime failed (run `make c-runtime-deps` for its packages):\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return build


@pytest.fixture(scope="session")
def estella_c(c_build):
    return os.path.join(c_build, "estella-c")
