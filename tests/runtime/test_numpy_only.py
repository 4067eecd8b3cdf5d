"""The numpy-only install (`pip install estella`, no extras), as on a device with numpy alone.

`make test` runs this file in .venv-numpy, where the interpreters are really absent
(ESTELLA_NUMPY_ONLY=1); elsewhere they are hidden from a child process the same way
test_no_tensorflow.py does it.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUMPY_ONLY = os.environ.get("ESTELLA_NUMPY_ONLY") == "1"
INTERPRETERS = ("ai_edge_litert", "tflite_runtime", "onnxruntime", "tensorflow")


def estella(*argv):
    hide = "".join(f"sys.modules[{name!r}] = None\n" for name in INTERPRETERS) if not NUMPY_ONLY else ""
    code = f"import sys\n{hide}from estella.runtime.cli import main\nsys.exit(main({list(argv)!r}))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.skipif(not NUMPY_ONLY, reason="checks the .venv-numpy install itself; make test runs it there")
def test_this_install_has_numpy_and_no_interpreter():
    assert [n for n in INTERPRETERS if importlib.util.find_spec(n) is not None] == []
    assert importlib.util.find_spec("threadpoolctl") is not None  # a base dependency


def test_generate_with_the_numpy_backend(real_export):
    result = estella("generate", real_export, "--backend", "numpy", "--prime", "Pip", "--chars", "30", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Pip") and len(result.stdout) == 3 + 30 + 1


def test_auto_picks_numpy_and_says_so(real_export):
    result = estella("generate", real_export, "--chars", "10", "--verbose")
    assert result.returncode == 0, result.stderr
    assert "backend: numpy float32 (chosen by auto" in result.stderr


@pytest.mark.parametrize("backend, extra", [("tflite", "estella[tflite]"), ("onnx", "estella[onnx]"),
                                            ("savedmodel", "estella[train]")])
def test_another_backend_names_its_extra(real_export, backend, extra):
    result = estella("generate", real_export, "--backend", backend, "--chars", "10")
    assert result.returncode == 2 and f"pip install '{extra}'" in result.stderr
    assert "Traceback" not in result.stderr


def test_int8_needs_an_interpreter(real_export):
    result = estella("generate", real_export, "--precision", "int8", "--chars", "10")
    assert result.returncode == 2 and "no backend can run the int8 artifacts" in result.stderr
    assert "estella[tflite]" in result.stderr and "estella[onnx]" in result.stderr
