"""The edge proof's CI leg: the runtime's parity rows on emulated Cortex-A72 and Cortex-A76 CPUs.

Runs what `make edge` runs (edge/prepare.sh, edge/make_fixture.py, edge/run.sh), on fixtures with
fewer fed-back steps to fit CI: the one-layer GRU on both CPUs, and the stacked LSTM on the
Cortex-A76 only, the core with the dot product, where int8 kernels take other paths (`make edge`
runs it on both, to keep the leg short here). The preparation is cached in ~/.cache/estella/edge
(EDGE_CACHE), so after the first run it only reinstalls a changed estella wheel. Needs root (chroot, mount, apt-get):
CI runs as root. TensorFlow makes the fixture's reference, so the runtime-only venv deselects this.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tensorflow

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EDGE = os.path.join(REPO, "edge")
CACHE = os.environ.get("EDGE_CACHE", os.path.expanduser("~/.cache/estella/edge"))
CPUS = ("cortex-a72", "cortex-a76")
VENVS = ("tflite", "onnx", "tflite-runtime")
STEPS = 100  # fed-back steps and characters of text per row (`make edge`: 300), to keep the leg near 3 minutes
# model -> (edge/make_fixture.py's flags, the CPUs it runs on); the stack is the Makefile's EDGE_STACK.
MODELS = {"gru": ([], CPUS), "lstm": (["--cell", "lstm", "--units", "64,64"], ("cortex-a76",))}


def run(cmd, timeout):
    """Run a step; past its timeout its process group gets SIGTERM, so that the script's trap unmounts
    the chroot (SIGKILL would skip it) once the emulated process in it has stopped."""
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "EDGE_CACHE": CACHE, "EDGE_HOST_PYTHON": sys.executable},
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(cmd)} ran past {timeout} s:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    assert process.returncode == 0, f"{' '.join(cmd)} exited {process.returncode}:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    return stdout


@pytest.fixture(scope="module")
def edge_out(tmp_path_factory, corpus_path):
    if os.geteuid() != 0:
        pytest.fail("the edge leg needs root (apt-get, debootstrap, chroot, mount): run the suite as root, "
                    "as CI does, or deselect it with --deselect tests/edge")
    run([os.path.join(EDGE, "prepare.sh"), REPO], timeout=1800)
    outs = {}
    for model, (flags, cpus) in MODELS.items():
        fixture = run([sys.executable, os.path.join(EDGE, "make_fixture.py"), os.path.join(CACHE, "fixtures"),
                       "--corpus", corpus_path, "--steps", str(STEPS), *flags], timeout=600).strip().splitlines()[-1]
        outs[model] = str(tmp_path_factory.mktemp("edge") / model)
        run([os.path.join(EDGE, "run.sh"), fixture, outs[model], *cpus], timeout=1800)
    return outs


def devices(outs):
    """(model, cpu, venv, row) -> the device's JSON, for every row that printed one."""
    found = {}
    for model, out in outs.items():
        for cpu in MODELS[model][1]:
            for venv in VENVS:
                for name in os.listdir(os.path.join(out, cpu, venv)):
                    if name.endswith(".json") and os.path.getsize(os.path.join(out, cpu, venv, name)):
                        with open(os.path.join(out, cpu, venv, name), encoding="utf-8") as f:
                            d = json.load(f)
                        found[model, cpu, venv, d["row"]] = d
    return found


def test_every_row_passes_on_each_emulated_cpu(edge_out):
    sys.path.insert(0, EDGE)
    import report

    text, problems = report.render(list(edge_out.values()))
    assert not problems, text  # a failure, unless it is one of report.KNOWN_FAILURES, which must fail
    for cpu in CPUS:
        assert f"`QEMU_CPU={cpu}`" in text
    assert "## Cortex-A76 (Raspberry Pi 5 class): V=" in text and "LSTM 2x64 (state 256)" in text
    found = devices(edge_out)
    rows = 9 * sum(len(cpus) for _, cpus in MODELS.values())
    assert len(found) >= rows - len(report.KNOWN_FAILURES) * len(MODELS)
    stacked = [d for (model, *_), d in found.items() if model == "lstm"]
    assert stacked and all(d["model"]["cell"] == "lstm" and d["model"]["units"] == [64, 64] for d in stacked)


def test_qemu_emulates_the_pi_cores_not_its_max_cpu(edge_out):
    # qemu's default `max` CPU has SVE, which no Pi has; the A76 has the dot product and atomics the A72 lacks.
    found = devices(edge_out)
    for (_, cpu, _, _), d in found.items():
        assert d["machine"] == "aarch64" and "sve" not in d["hwcaps"]
        newer = {"asimddp", "atomics", "lrcpc"} & set(d["hwcaps"])
        assert newer == ({"asimddp", "atomics", "lrcpc"} if cpu == "cortex-a76" else set()), (cpu, d["hwcaps"])


def test_each_device_venv_runs_its_own_interpreter_and_the_checkouts_parity_measure(edge_out):
    with open(os.path.join(REPO, "runtime", "parity.py"), "rb") as f:
        parity_sha = hashlib.sha256(f.read()).hexdigest()
    interpreters = {"tflite": "ai_edge_litert", "onnx": "onnx", "tflite-runtime": "tflite_runtime"}
    for (_, cpu, venv, row), d in devices(edge_out).items():
        assert d["parity_sha256"] == parity_sha, "the device ran a stale estella wheel"
        assert not {"tensorflow", "tensorflow-cpu"} & d["versions"].keys() and not d["tensorflow_imported"]
        if d["interpreter"] is not None:
            assert d["interpreter"] == ("numpy" if row.startswith("numpy") else interpreters[venv])
        if venv == "tflite-runtime":
            assert d["versions"]["tflite-runtime"] == "2.14.0" and d["versions"]["numpy"].startswith("1.")


def test_the_c_runtime_writes_the_python_runtimes_texts_on_each_emulated_cpu(edge_out):
    """estella-c, cross-built for aarch64, against the device's own `estella generate --backend tflite`."""
    for cpu in CPUS:
        with open(os.path.join(edge_out["gru"], cpu, "c-runtime.json"), encoding="utf-8") as f:
            d = json.load(f)
        assert d["machine"] == "aarch64" and not d["failures"], d["failures"]
        texts = [c for c in d["cases"] if not c.get("refusal")]
        assert len(texts) >= 5 and all(c["equal"] for c in texts)
        assert all(c["equal"] for c in d["cases"] if c.get("refusal"))
