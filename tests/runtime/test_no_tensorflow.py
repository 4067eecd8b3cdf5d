"""The runtime in a fresh interpreter: it never imports TensorFlow, and a missing interpreter names its extra.

A package is hidden by setting sys.modules[name] = None before anything imports it, which makes
every `import name` fail as if it were not installed; the real interpreters are used otherwise.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_python(code, hide=()):
    prelude = "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in hide)
    result = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    return result


def test_generation_never_imports_tensorflow(real_export):
    code = f"""
import json
from estella.runtime.generator import Generator
from estella.runtime.cli import main
texts = {{}}
for name in ("auto", "tflite", "onnx", "numpy"):
    for precision in (("float32", "int8") if name in ("auto", "tflite", "onnx") else ("float32",)):
        texts[name + "-" + precision] = Generator.load({real_export!r}, name, precision).generate("Pip", 20, seed=1)
code = main(["generate", {real_export!r}, "--prime", "Pip", "--chars", "20", "--stream", "--stats"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "onnx"))
print(json.dumps({{"texts": texts, "code": code, "heavy": heavy}}))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [], f"the runtime imported {out['heavy']}"
    assert out["code"] == 0 and len(out["texts"]) == 7
    assert all(t.startswith("Pip") and len(t) == 23 for t in out["texts"].values())


HEAVY = ("tensorflow", "keras", "estella.build", "estella.export", "estella.bench")


@pytest.mark.parametrize("argv", [["generate", "--chars", "20", "--seed", "1"],
                                  ["generate", "--chars", "20", "--stream", "--backend", "onnx", "--precision", "int8"],
                                  ["inspect"], ["inspect", "--no-verify"]])
def test_the_runtime_commands_import_no_other_stage(real_export, argv):
    """`estella generate` / `inspect` alone in a process: no TensorFlow, Keras, nor the build, export and
    bench stages (the dispatcher imports only the command's module). inspect loads the SavedModel
    where TensorFlow is installed, so TensorFlow is hidden for it here."""
    argv = [argv[0], real_export, *argv[1:]]
    code = f"""
from estella.runtime.cli import main
code = main({argv!r})
loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and any(m == h or m.startswith(h + ".") for h in {HEAVY!r}))
print("LOADED", code, loaded)
"""
    result = run_python(code, ("tensorflow",) if argv[0] == "inspect" else ())
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line == "LOADED 0 []", line


@pytest.mark.parametrize("command", [["train", "RUN", "--corpus", "CORPUS"], ["export", "RUN"], ["bench", "--quick"],
                                     ["sample", "RUN"]])
def test_training_commands_in_a_runtime_only_install_name_the_extra(tmp_path, command):
    """As in the runtime-only virtualenv (there nothing is hidden, it is really absent): exit 2 at once."""
    argv = [str(tmp_path) if a in ("RUN", "CORPUS") else a for a in command]
    code = f"from estella.runtime.cli import main; sys.exit(main({argv!r}))"
    result = run_python(code, ("tensorflow", "keras"))
    assert result.returncode == 2, result.stderr
    assert "pip install 'estella[train]'" in result.stderr and "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []  # nothing started


@pytest.mark.parametrize("backend, hide, extra", [
    ("tflite", ("ai_edge_litert", "tflite_runtime"), "pip install 'estella[tflite]'"),
    ("onnx", ("onnxruntime",), "pip install 'estella[onnx]'"),
    ("savedmodel", ("tensorflow",), "pip install 'estella[train]'"),
])
def test_missing_interpreter_names_the_extra(real_export, backend, hide, extra):
    code = f"""
from estella.runtime.backends import open_backend
from estella.runtime.errors import MissingDependency
try:
    open_backend({real_export!r}, {backend!r})
except MissingDependency as e:
    print("MissingDependency:", e)
"""
    result = run_python(code, hide)
    assert result.returncode == 0, result.stderr
    assert "MissingDependency:" in result.stdout and extra in result.stdout

    cli = run_python(f"from estella.runtime.cli import main; sys.exit(main(['generate', {real_export!r}, "
                     f"'--backend', {backend!r}, '--chars', '5']))", hide)
    assert cli.returncode == 2, cli.stderr
    assert extra in cli.stderr and "Traceback" not in cli.stderr


def test_auto_falls_back_to_what_is_installed(real_export):
    code = f"""
from estella.runtime.backends import open_backend
print(open_backend({real_export!r}, "auto").name, flush=True)
print(open_backend({real_export!r}, "auto", "int8").name)
"""
    result = run_python(code, ("ai_edge_litert", "tflite_runtime"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["onnx", "onnx"]
    result = run_python(code, ("ai_edge_litert", "tflite_runtime", "onnxruntime"))
    assert result.returncode == 1 and result.stdout.split() == ["numpy"]
    assert "no backend can run the int8 artifacts" in result.stderr and "estella[onnx]" in result.stderr
