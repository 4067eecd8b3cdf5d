"""The structure of every artifact: names, shapes and dtypes, op lists, checkers, real TF clients."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow

ARTIFACT_NAMES = {"savedmodel-float32", "tflite-float32", "tflite-int8", "onnx-float32", "onnx-int8", "numpy-float32",
                  "tflite-int8-full"}


def dims(export_dir):
    """(V, E, S): vocabulary, embedding and the state row's width."""
    from estella.runtime.manifest import load_manifest
    model = load_manifest(export_dir)["model"]
    return model["vocab_size"], model["embedding_dim"], model["state_size"]


def first_gates(export_dir):
    """G * U_0: the width of the folded input table."""
    from estella.runtime.manifest import load_manifest
    model = load_manifest(export_dir)["model"]
    return {"gru": 3, "lstm": 4}[model["cell"]] * model["layers"][0]["units"]


def test_manifest_describes_every_file(export):
    from estella.build.config import load_config
    from estella.build.model import rnn_layer_names, state_layout
    from estella.runtime.manifest import load_manifest

    run, export_dir = export
    manifest = load_manifest(export_dir, verify=True)  # sizes and sha256 of every listed file
    assert manifest["schema_version"] == 2 and manifest["kind"] == "estella.char-rnn"
    left_out = manifest["parity"]["left_out"]  # the microcontroller file alone is optional (FORMAT.md)
    assert set(left_out) <= {"tflite-int8-full"}
    assert {a["name"] for a in manifest["artifacts"]} == ARTIFACT_NAMES - set(left_out)
    listed = {f["path"] for a in manifest["artifacts"] for f in a["files"]}
    on_disk = {os.path.relpath(os.path.join(d, f), export_dir).replace(os.sep, "/")
               for d, _, files in os.walk(export_dir) for f in files}
    assert on_disk - {"manifest.json"} == listed
    V, E, U = dims(export_dir)
    cfg = load_config(run)
    hp = cfg["hparams"]
    cell, units = hp.cell, hp.units
    model = manifest["model"]
    assert E == cfg["hparams"].embedding_dim and len(model["vocab"]) == V == cfg["vocab_size"]
    assert model["cell"] == cell and model["dropout"] == hp.dropout
    assert model["layers"] == [{"name": n, "cell": cell, "units": u}
                               for n, u in zip(rnn_layer_names(cell, len(units)), units)]
    assert U == model["state_size"] == (2 if cell == "lstm" else 1) * sum(units)
    settings = {"gru": {"gate_order": ["z", "r", "h"], "reset_after": True, "activation": "tanh",
                        "recurrent_activation": "sigmoid"},
                "lstm": {"gate_order": ["i", "f", "c", "o"], "activation": "tanh", "recurrent_activation": "sigmoid",
                         "unit_forget_bias": True}}
    assert model["cells"] == {cell: settings[cell]}
    assert manifest["state"] == {"name": "state", "shape": ["batch", U], "dtype": "float32", "initial": "zeros",
                                 "layout": state_layout(cell, units)}
    for a in manifest["artifacts"]:
        b = a["batch"] if a["batch"] is not None else "batch"
        t = a["time"] if a["time"] is not None else "time"
        assert [(i["name"], i["shape"], i["dtype"]) for i in a["inputs"]] == [
            ("ids", [b, t], "int32"), ("state", [b, U], "float32")]
        assert [(o["name"], o["shape"], o["dtype"]) for o in a["outputs"]] == [
            ("logits", [b, t, V], "float32"), ("new_state", [b, U], "float32")]
    provenance = manifest["provenance"]
    assert provenance["corpus_sha256"] == cfg["corpus"]["sha256"]
    for name in ("estella", "tensorflow", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"):
        assert provenance["versions"][name]


def test_tiny_manifest_has_the_validation_loss(tiny_export):
    import json
    from estella.runtime.manifest import load_manifest

    run, export_dir = tiny_export
    with open(os.path.join(run, "state.json")) as f:
        state = json.load(f)
    provenance = load_manifest(export_dir)["provenance"]
    assert provenance["validation_loss"] == state["best_val_loss"]
    assert provenance["validation_bpc"] == pytest.approx(state["best_val_loss"] / np.log(2))


def test_weights_npz_is_plain_arrays(export):
    from estella.runtime.manifest import load_manifest

    _, export_dir = export
    V, E, _ = dims(export_dir)
    model = load_manifest(export_dir)["model"]
    units = [layer["units"] for layer in model["layers"]]
    with np.load(os.path.join(export_dir, "weights.npz"), allow_pickle=False) as w:
        shapes = {k: (w[k].shape, w[k].dtype) for k in w.files}
    G = {"gru": 3, "lstm": 4}[model["cell"]]
    want = {"embedding": (V, E), "dense_kernel": (units[-1], V), "dense_bias": (V,)}
    for k, u in enumerate(units):  # FORMAT.md's schema 2, written out here
        want[f"layer{k}_kernel"] = (E if k == 0 else units[k - 1], G * u)
        want[f"layer{k}_recurrent_kernel"] = (u, G * u)
        want[f"layer{k}_bias"] = (2, 3 * u) if model["cell"] == "gru" else (4 * u,)
    assert shapes == {k: (shape, np.dtype("float32")) for k, shape in want.items()}


@pytest.mark.parametrize("name", ["model.tflite", "model.int8.tflite"])
def test_tflite_is_builtins_only_with_the_step_signature(export, name):
    from ai_edge_litert.interpreter import Interpreter
    from estella.export.tflite import VARIABLE_OPS, check_builtin_only, operators

    _, export_dir = export
    V, _, U = dims(export_dir)
    with open(os.path.join(export_dir, name), "rb") as f:
        data = f.read()
    ops = {op for op, _ in operators(data)}
    assert not ops & VARIABLE_OPS and not any(op.startswith("Flex") for op in ops), ops
    assert {"FULLY_CONNECTED", "GATHER", "LOGISTIC", "TANH"} <= ops and "WHILE" not in ops
    check_builtin_only(data, name)
    interpreter = Interpreter(model_content=data)
    assert interpreter.get_signature_list() == {
        "serving_default": {"inputs": ["ids", "state"], "outputs": ["logits", "new_state"]}}
    runner = interpreter.get_signature_runner("serving_default")
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    assert [list(inputs["ids"]["shape"]), inputs["ids"]["dtype"]] == [[1, 1], np.int32]
    assert [list(inputs["state"]["shape"]), inputs["state"]["dtype"]] == [[1, U], np.float32]
    assert [list(outputs["logits"]["shape"]), outputs["logits"]["dtype"]] == [[1, 1, V], np.float32]
    assert [list(outputs["new_state"]["shape"]), outputs["new_state"]["dtype"]] == [[1, U], np.float32]


def test_tflite_int8_weights_are_per_tensor(seed_export):
    """tflite-runtime 2.14 loads per-tensor hybrid FULLY_CONNECTED, not the per-channel one."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(os.path.join(seed_export[1], "model.int8.tflite"))
    int8 = [t for t in model.subgraphs[0].tensors if t.type == schema.TensorType.INT8]
    assert len(int8) >= 3  # the recurrent layer's two kernels and the dense kernel at least
    assert all(len(t.quantization.scale) == 1 for t in int8), [len(t.quantization.scale) for t in int8]


def test_builtin_check_rejects_variable_and_flex_ops():
    import tensorflow as tf
    from estella.export.errors import ExportError
    from estella.export.tflite import check_builtin_only

    class Counter(tf.Module):
        def __init__(self):
            self.total = tf.Variable(tf.zeros([4]))

        @tf.function(input_signature=[tf.TensorSpec([4], tf.float32)])
        def add(self, x):
            self.total.assign_add(x)
            return {"y": self.total * 2.0}

    counter = Counter()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([counter.add.get_concrete_function()], counter)
    converter.experimental_enable_resource_variables = True
    with pytest.raises(ExportError, match="VAR_HANDLE"):
        check_builtin_only(converter.convert(), "variables.tflite")

    @tf.function(input_signature=[tf.TensorSpec([3, 3], tf.float32)])
    def det(x):
        return {"y": tf.linalg.det(x)}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([det.get_concrete_function()], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    with pytest.raises(ExportError, match="Flex"):
        check_builtin_only(converter.convert(), "flex.tflite")


@pytest.mark.parametrize("name", ["model.onnx", "model.int8.onnx"])
def test_onnx_passes_the_checker_with_dynamic_batch_and_no_loop(export, name):
    import onnx

    _, export_dir = export
    V, _, U = dims(export_dir)
    path = os.path.join(export_dir, name)
    onnx.checker.check_model(path, full_check=True)
    model = onnx.load(path)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Loop", "Scan"}, ops
    if "int8" in name:
        assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, ops

    def signature(values):
        return [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
                 v.type.tensor_type.elem_type) for v in values]

    assert signature(model.graph.input) == [("ids", ["batch", 1], onnx.TensorProto.INT32),
                                            ("state", ["batch", U], onnx.TensorProto.FLOAT)]
    assert signature(model.graph.output) == [("logits", ["batch", 1, V], onnx.TensorProto.FLOAT),
                                             ("new_state", ["batch", U], onnx.TensorProto.FLOAT)]


def saved_model_cli(*args):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    done = subprocess.run([cli, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_saved_model_cli_shows_both_signatures(export):
    _, export_dir = export
    V, _, U = dims(export_dir)
    shown = saved_model_cli("show", "--all", "--dir", os.path.join(export_dir, "saved_model", "1"))
    signatures = dict(re.findall(r"signature_def\['(\w+)'\]:(.*?)Method name", shown, re.S))
    assert {name for name in signatures if not name.startswith("__")} == {"serving_default", "sample"}

    def tensors(text, kind):
        part = text.split("output(s):")[0 if kind == "inputs" else 1]
        return {name: (dtype, shape) for name, dtype, shape in
                re.findall(r"\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: \(([^)]*)\)", part)}

    step, sample = signatures["serving_default"], signatures["sample"]
    assert tensors(step, "inputs") == {"ids": ("DT_INT32", "-1, -1"), "state": ("DT_FLOAT", f"-1, {U}")}
    assert tensors(step, "outputs") == {"logits": ("DT_FLOAT", f"-1, -1, {V}"), "new_state": ("DT_FLOAT", f"-1, {U}")}
    assert tensors(sample, "inputs") == {"ids": ("DT_INT32", "-1, -1"), "state": ("DT_FLOAT", f"-1, {U}"),
                                         "temperature": ("DT_FLOAT", ""), "seed": ("DT_INT32", "")}
    assert tensors(sample, "outputs") == {"next_ids": ("DT_INT32", "-1, 1"), "new_state": ("DT_FLOAT", f"-1, {U}")}


def test_saved_model_cli_runs_both_signatures(tiny_export, tmp_path):
    from estella.build.sample import load_reference

    run, export_dir = tiny_export
    step_model, vocab, _ = load_reference(run)
    U = step_model.inputs[1].shape[-1]
    ids = vocab.encode("Pip and Joe")[None, :]
    state = np.random.default_rng(0).uniform(-1, 1, (1, U)).astype(np.float32)
    inputs = tmp_path / "inputs.npz"
    # A temperature near zero makes the in-graph draw the reference's argmax.
    np.savez(inputs, ids=ids, state=state, temperature=np.float32(1e-4), seed=np.int32(7))
    ref_logits, ref_state = (np.asarray(t) for t in step_model([ids, state]))
    model_dir = os.path.join(export_dir, "saved_model", "1")

    saved_model_cli("run", "--dir", model_dir, "--tag_set", "serve", "--signature_def", "serving_default",
                    "--inputs", f"ids={inputs}[ids];state={inputs}[state]", "--outdir", str(tmp_path / "step"))
    np.testing.assert_allclose(np.load(tmp_path / "step" / "logits.npy"), ref_logits, atol=1e-4)
    np.testing.assert_allclose(np.load(tmp_path / "step" / "new_state.npy"), ref_state, atol=1e-4)

    saved_model_cli("run", "--dir", model_dir, "--tag_set", "serve", "--signature_def", "sample",
                    "--inputs", ";".join(f"{k}={inputs}[{k}]" for k in ("ids", "state", "temperature", "seed")),
                    "--outdir", str(tmp_path / "sample"))
    next_ids = np.load(tmp_path / "sample" / "next_ids.npy")
    assert next_ids.dtype == np.int32 and next_ids.shape == (1, 1)
    assert next_ids[0, 0] == ref_logits[0, -1].argmax()
    np.testing.assert_allclose(np.load(tmp_path / "sample" / "new_state.npy"), ref_state, atol=1e-4)


def test_every_step_graph_gathers_the_folded_input_table(export):
    """One [V, G*U0] table replaces the [V, E] embedding and the first layer's [E, G*U0] input kernel in every graph."""
    import onnx
    from onnx import numpy_helper
    from tensorflow.lite.tools import flatbuffer_utils

    from estella.export.stepgraph import graph_weights

    _, export_dir = export
    V, E, _ = dims(export_dir)
    G0 = first_gates(export_dir)
    with np.load(os.path.join(export_dir, "weights.npz")) as w:
        weights = {k: w[k] for k in w.files}
    bias = weights["layer0_bias"]
    table = (weights["embedding"].astype(np.float64) @ weights["layer0_kernel"]
             + (bias[0] if bias.ndim == 2 else bias)).astype(np.float32)
    assert weights["embedding"].shape == (V, E)  # weights.npz keeps the unfolded arrays
    for name in ("model.tflite", "model.int8.tflite"):
        shapes = [list(t.shape) for t in flatbuffer_utils.read_model(os.path.join(export_dir, name)).subgraphs[0].tensors]
        assert [V, G0] in shapes and [V, E] not in shapes and [G0, E] not in shapes, (name, shapes)
    for name in ("model.onnx", "model.int8.onnx"):
        initializers = {i.name: numpy_helper.to_array(i) for i in onnx.load(os.path.join(export_dir, name)).graph.initializer}
        shapes = [list(a.shape) for a in initializers.values()]
        assert [V, E] not in shapes and [E, G0] not in shapes, (name, shapes)
        # The int8 file keeps the table in float32: only the MatMuls are quantized.
        (found,) = [a for a in initializers.values() if list(a.shape) == [V, G0]]
        assert found.dtype == np.float32 and np.array_equal(found, table), name
    import tensorflow as tf

    loaded = tf.saved_model.load(os.path.join(export_dir, "saved_model", "1"))
    variables = {name: v.shape.as_list() for name, v in loaded.weights.items()}
    assert variables == {name: list(a.shape) for name, a in graph_weights(weights).items()}
    assert variables["input_table"] == [V, G0] and "embedding" not in variables and "layer0_kernel" not in variables
    assert load_manifest_model(export_dir)["input_table"]["folded"] is True


def load_manifest_model(export_dir):
    from estella.runtime.manifest import load_manifest
    return load_manifest(export_dir)["model"]


def test_the_unfolded_graph_for_the_bench_computes_the_same(tiny_export, tmp_path):
    """stepgraph.step_function(weights, fold=False): the bench's baseline, the same step as the folded one."""
    from estella.export.stepgraph import step_function
    from estella.export.tflite import write_tflite
    from estella.runtime.backends import open_backend

    _, export_dir = tiny_export
    with np.load(os.path.join(export_dir, "weights.npz")) as w:
        weights = {k: w[k] for k in w.files}
    V, U = weights["embedding"].shape[0], dims(export_dir)[2]
    G0 = first_gates(export_dir)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (3, 1)).astype(np.int32)
    state = rng.uniform(-1, 1, (3, U)).astype(np.float32)
    folded = step_function(weights)(ids, state)
    unfolded = step_function(weights, fold=False)(ids, state)
    reference = open_backend(export_dir, "numpy").step(ids, state)
    for out in (folded, unfolded):
        np.testing.assert_allclose(out["logits"].numpy(), reference[0], atol=1e-5)
        np.testing.assert_allclose(out["new_state"].numpy(), reference[1], atol=1e-5)
    write_tflite(weights, str(tmp_path / "unfolded.tflite"), fold=False)
    from tensorflow.lite.tools import flatbuffer_utils
    shapes = [list(t.shape) for t in flatbuffer_utils.read_model(str(tmp_path / "unfolded.tflite")).subgraphs[0].tensors]
    assert [V, G0] not in shapes and [V, weights["embedding"].shape[1]] in shapes
