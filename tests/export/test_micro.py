"""The int8-full artifact (TensorFlow Lite Micro): full-integer, builtin ops that Micro runs, its arena
measured by the Micro interpreter, checked by the export's gate and run by the tflm backend."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("tflite_micro", reason="the [micro] extra (tflite-micro) is x86-64 / Python 3.11 only")

from estella.runtime.backends import open_backend  # noqa: E402
from estella.runtime.backends.base import ArtifactError  # noqa: E402
from estella.runtime.evaluate import teacher_forced  # noqa: E402

pytestmark = pytest.mark.tensorflow
ESTELLA = [sys.executable, "-m", "estella.runtime.cli"]


def micro_artifact(manifest):
    found = [a for a in manifest["artifacts"] if a["precision"] == "int8-full"]
    assert len(found) == 1, [a["name"] for a in manifest["artifacts"]]
    return found[0]


def test_int8_full_is_full_integer_and_runs_in_tflite_micro(real_export):
    from estella.export.micro import MICRO_OPS
    from estella.export.tflite import operators
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    with open(os.path.join(real_export, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    artifact = micro_artifact(manifest)
    assert artifact["format"] == "tflite" and artifact["batch"] == 1 and artifact["time"] == 1
    assert isinstance(artifact["arena_bytes"], int) and 0 < artifact["arena_bytes"] < 64 * 1024
    assert manifest["parity"]["artifacts"][artifact["name"]]["passed"] is True

    with open(os.path.join(real_export, artifact["path"]), "rb") as f:
        content = f.read()
    assert {name for name, _ in operators(content)} <= MICRO_OPS
    # Full integer: every FULLY_CONNECTED takes int8 activations and int8 weights (hybrid files take float activations).
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    graph = model.subgraphs[0]
    fc = [i for i, code in enumerate(model.operatorCodes)
          if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.FULLY_CONNECTED]
    fc_ops = [op for op in graph.operators if op.opcodeIndex in fc]
    assert fc_ops
    for op in fc_ops:
        assert [graph.tensors[t].type for t in op.inputs[:2]] == [schema.TensorType.INT8] * 2

    micro = open_backend(real_export, "tflm", "int8-full")
    litert = open_backend(real_export, "tflite", "float32")
    assert micro.name == "tflm" and micro.arena_bytes == artifact["arena_bytes"]
    ids = np.array([[1], [2], [3]], np.int32)  # three streams: stepped one at a time in the fixed graph
    logits, state = micro.step(ids, micro.initial_state(3))
    alone, _ = micro.step(ids[1:2], micro.initial_state(1))
    assert logits.shape == (3, 1, micro.vocab_size) and np.array_equal(logits[1], alone[0])
    reference, _ = litert.step(ids, litert.initial_state(3))
    assert (logits.argmax(-1) == reference.argmax(-1)).mean() >= 2 / 3


def test_tflm_bits_per_char_close_to_float(real_export, corpus_slice):
    with open(os.path.join(real_export, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    vocab = manifest["model"]["vocab"]
    with open(corpus_slice, encoding="utf-8") as f:  # read at run time: no text of the book is kept here
        text = f.read()[-2000:]
    ids = np.array([vocab.index(c) for c in text if c in vocab], np.int32)
    micro = teacher_forced(open_backend(real_export, "tflm", "int8-full"), ids)["bpc"]
    float32 = teacher_forced(open_backend(real_export, "numpy", "float32"), ids)["bpc"]
    assert abs(micro - float32) < 0.1, (micro, float32)


def test_cli_tflm_needs_the_int8_full_precision(real_export):
    done = subprocess.run([*ESTELLA, "generate", real_export, "--backend", "tflm", "--chars", "5"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no float32 artifact for the tflm backend" in done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run([*ESTELLA, "generate", real_export, "--backend", "tflm", "--precision", "int8-full",
                           "--prime", "Pip", "--chars", "20", "--seed", "3"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Pip") and len(done.stdout.rstrip("\n")) >= 20


def test_evaluate_all_lists_int8_full_under_tflite_micro(real_export, corpus_slice):
    done = subprocess.run([*ESTELLA, "evaluate", real_export, "--all", "--text", corpus_slice, "--chars", "400"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # quiet: no interpreter's or TensorFlow's log line (the SavedModel row included)
    rows = [line.split() for line in done.stdout.splitlines()]
    assert any(r[:2] == ["tflm", "int8-full"] and float(r[3]) > 0 for r in rows if len(r) >= 4), done.stdout


def test_an_arena_smaller_than_measured_is_refused(real_export, tmp_path):
    from estella.runtime.manifest import load_manifest

    copy = str(tmp_path / "export")
    shutil.copytree(real_export, copy)
    manifest = load_manifest(copy)
    # Too small for the graph: refused (tried in a child process, as the Micro wrapper may crash on it).
    for small in (4096, micro_artifact(manifest)["arena_bytes"] - 16):
        micro_artifact(manifest)["arena_bytes"] = small
        with pytest.raises(ArtifactError, match=f"arena of {small} bytes"):
            open_backend(copy, "tflm", "int8-full", manifest=manifest)
    for bad in (64, "lots", True, 2 ** 40):
        micro_artifact(manifest)["arena_bytes"] = bad
        with pytest.raises(ArtifactError, match="arena_bytes"):
            open_backend(copy, "tflm", "int8-full", manifest=manifest)


def test_the_micro_preset_fits_a_microcontroller(corpus_path, tmp_path):
    """The `micro` preset's int8-full file under 512 KB of flash and its arena under 64 KB of RAM (an
    ESP32-S3 or Cortex-M7 budget), measured on a run of its shape (random weights: the sizes do not
    depend on the values) calibrated on the book."""
    from estella.build.config import PRESETS
    from estella.build.random_run import make_random_run
    from estella.build.sample import load_reference
    from estella.export.micro import write_tflite_int8_full
    from estella.export.weights import weights_from_model

    hp = PRESETS["micro"]
    with open(corpus_path, encoding="utf-8") as f:
        text = f.read(20_000)
    chars = sorted(set(text))
    run = make_random_run(str(tmp_path / "run"), chars, embedding_dim=hp.embedding_dim, units=hp.units, cell=hp.cell)
    step_model, vocab, _ = load_reference(run)
    path = str(tmp_path / "model.int8-full.tflite")
    arena = write_tflite_int8_full(weights_from_model(step_model), path, vocab.encode(text))
    assert os.path.getsize(path) < 512 * 1024, os.path.getsize(path)
    assert arena < 64 * 1024, arena
