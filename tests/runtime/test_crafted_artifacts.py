"""Crafted artifacts whose hashes the manifest matches (a malicious or broken exporter writes both):
an ONNX tensor kept in another file, NaN or infinite weights, a manifest that swaps the precision of
two files. Each is refused at load with a clear error, exit 2 from the CLI, never a traceback."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from estella.runtime.backends import open_backend
from estella.runtime.backends.base import ArtifactError
from estella.runtime.cli import main


@pytest.fixture
def real_copy(real_export, tmp_path):
    return str(shutil.copytree(real_export, tmp_path / "real"))


def read_manifest(folder):
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def write_manifest(folder, manifest):
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)


def rewrite_file(folder, path, data):
    """Replace a listed file and its size and sha256 in the manifest, so that only the content is wrong."""
    with open(os.path.join(folder, path), "wb") as f:
        f.write(data)
    manifest = read_manifest(folder)
    for artifact in manifest["artifacts"]:
        for entry in artifact["files"]:
            if entry["path"] == path:
                entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    write_manifest(folder, manifest)


def refused(capsys, folder, message, backend, precision="float32"):
    with pytest.raises(ArtifactError, match=message):
        open_backend(folder, backend, precision)
    for argv in (["generate", folder, "--backend", backend, "--precision", precision, "--chars", "3"],
                 ["inspect", folder]):
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 2 and "Traceback" not in err, (argv, err)
        assert message.replace("\\", "") in err or argv[0] == "inspect", err
    return err


# --- ONNX: no tensor kept in another file -------------------------------------------------------

def _external(tensor, location):
    from onnx import TensorProto

    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(4 * int(np.prod(tensor.dims))))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def _step_graph(V, U, nodes=(), initializers=()):
    """A graph with the step's inputs and outputs: logits are zeros, new_state = state (+ nodes)."""
    from onnx import TensorProto, helper, numpy_helper

    zeros = numpy_helper.from_array(np.zeros((1, 1, V), np.float32), "zeros")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["zeros"], ["logits"]), *nodes],
        "step",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, [None, None]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [None, U])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, None, V]),
         helper.make_tensor_value_info("new_state", TensorProto.FLOAT, [None, U])],
        [zeros, *initializers])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _dims(folder):
    model = read_manifest(folder)["model"]
    return model["vocab_size"], model["state_size"]


@pytest.mark.tensorflow  # the onnx package (the [train] extra) writes the crafted graphs
@pytest.mark.parametrize("where", ["initializer", "constant", "subgraph"])
def test_an_onnx_tensor_in_another_file_is_refused_before_onnx_runtime(real_copy, tmp_path, monkeypatch, capsys, where):
    """ONNX Runtime would open the named file relative to the working directory."""
    from onnx import TensorProto, helper, numpy_helper

    V, U = _dims(real_copy)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(np.full(U, 7, np.float32).tobytes())
    weight = _external(numpy_helper.from_array(np.zeros((1, U), np.float32), "w"), "secret.bin")
    if where == "initializer":
        data = _step_graph(V, U, [helper.make_node("Add", ["state", "w"], ["new_state"])], [weight])
    elif where == "constant":
        data = _step_graph(V, U, [helper.make_node("Constant", [], ["w"], value=weight),
                                  helper.make_node("Add", ["state", "w"], ["new_state"])])
    else:
        branch = helper.make_graph([helper.make_node("Constant", [], ["w_out"], value=weight)], "then", [],
                                   [helper.make_tensor_value_info("w_out", TensorProto.FLOAT, [1, U])])
        other = helper.make_graph([helper.make_node("Constant", [], ["z_out"], value=numpy_helper.from_array(
            np.zeros((1, U), np.float32), "z"))], "else", [],
            [helper.make_tensor_value_info("z_out", TensorProto.FLOAT, [1, U])])
        flag = numpy_helper.from_array(np.array(True), "flag")
        data = _step_graph(V, U, [helper.make_node("If", ["flag"], ["w"], then_branch=branch, else_branch=other),
                                  helper.make_node("Add", ["state", "w"], ["new_state"])], [flag])
    rewrite_file(real_copy, "model.onnx", data)
    err = refused(capsys, real_copy, "keeps its data in another file", "onnx")
    assert "secret.bin" not in err or "7" not in err


# --- NaN or infinite weights ----------------------------------------------------------------------

def test_nan_numpy_weights_are_refused(real_copy, capsys):
    with np.load(os.path.join(real_copy, "weights.npz")) as npz:
        weights = {k: npz[k] for k in npz.files}
    weights["dense_bias"][3] = np.nan
    path = os.path.join(real_copy, "weights.npz")
    np.savez(path, **weights)
    rewrite_file(real_copy, "weights.npz", open(path, "rb").read())
    refused(capsys, real_copy, "NaN or infinite weights", "numpy")


@pytest.mark.tensorflow  # the onnx package edits the graph
def test_infinite_onnx_weights_are_refused(real_copy, capsys):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(os.path.join(real_copy, "model.onnx"))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(biggest).copy()
    array.flat[0] = np.inf
    biggest.CopyFrom(numpy_helper.from_array(array, biggest.name))
    rewrite_file(real_copy, "model.onnx", model.SerializeToString())
    refused(capsys, real_copy, "NaN or infinite weights", "onnx")


def test_nan_tflite_weights_are_refused(real_copy, capsys):
    """A float32 constant of the flatbuffer set to NaN in place: found through the interpreter's tensors."""
    from estella.runtime.backends.tflite import interpreter_class

    path = os.path.join(real_copy, "model.tflite")
    data = bytearray(open(path, "rb").read())
    interpreter = interpreter_class()(model_content=bytes(data))
    constants = [d for d in interpreter.get_tensor_details() if d["dtype"] == np.float32 and _constant(interpreter, d)]
    target = max(constants, key=lambda d: int(np.prod(d["shape"])))
    values = interpreter.get_tensor(target["index"]).astype(np.float32).tobytes()
    at = bytes(data).find(values)
    assert at > 0, "the constant's bytes are stored as they are read"
    data[at:at + 4] = np.array([np.nan], np.float32).tobytes()
    rewrite_file(real_copy, "model.tflite", bytes(data))
    refused(capsys, real_copy, "NaN or infinite weights", "tflite")


def _constant(interpreter, detail):
    try:
        interpreter.get_tensor(detail["index"])
        return True
    except ValueError:
        return False


# --- the precision the manifest claims ------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_a_manifest_that_swaps_the_two_precisions_is_refused(real_copy, capsys, fmt):
    manifest = read_manifest(real_copy)
    floats, ints = (next(a for a in manifest["artifacts"] if a["format"] == fmt and a["precision"] == p)
                    for p in ("float32", "int8"))
    for key in ("path", "files"):
        floats[key], ints[key] = ints[key], floats[key]
    write_manifest(real_copy, manifest)
    refused(capsys, real_copy, "is an int8 graph but the manifest says float32", fmt, "float32")
    refused(capsys, real_copy, "is a float32 graph but the manifest says int8", fmt, "int8")


# --- crafted files that used to end in a traceback --------------------------------------------------

def test_a_tflite_tensor_name_of_invalid_utf8_is_refused(real_copy, capsys):
    from estella.runtime.backends.tflite import interpreter_class

    path = os.path.join(real_copy, "model.tflite")
    data = bytearray(open(path, "rb").read())
    names = [d["name"] for d in interpreter_class()(model_content=bytes(data)).get_tensor_details() if d["name"]]
    name = max(names, key=len).encode()
    at = bytes(data).find(name)
    assert at > 0
    data[at] = 0xFF  # no longer UTF-8
    rewrite_file(real_copy, "model.tflite", bytes(data))
    refused(capsys, real_copy, "LiteRT cannot load artifact", "tflite")


def test_an_npz_header_declaring_4e9_rows_is_refused_before_allocating(real_copy, capsys):
    import io
    import zipfile

    path = os.path.join(real_copy, "weights.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (4_000_000_000, arrays["embedding"].shape[1])})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array)
            archive.writestr(f"{key}.npy", header.getvalue() + b"\0" * 64 if key == "embedding" else member.getvalue())
    rewrite_file(real_copy, "weights.npz", buffer.getvalue())
    err = refused(capsys, real_copy, "declares shape \\[4000000000", "numpy")
    assert "MemoryError" not in err


@pytest.mark.tensorflow  # the onnx package writes the graph
def test_an_onnx_graph_that_fails_when_it_runs_is_refused_at_load(real_copy, capsys):
    """inspect says "loaded" only of an artifact that ran one step."""
    from onnx import helper, numpy_helper

    V, U = _dims(real_copy)
    index = numpy_helper.from_array(np.array([U + 5], np.int64), "index")  # out of range: found only when it runs
    data = _step_graph(V, U, [helper.make_node("Gather", ["state", "index"], ["picked"], axis=1),
                              helper.make_node("Add", ["state", "picked"], ["new_state"])], [index])
    rewrite_file(real_copy, "model.onnx", data)
    refused(capsys, real_copy, "loads but fails when it runs one step", "onnx")


def test_an_npz_member_that_unpacks_beyond_the_file_is_refused(real_copy, capsys):
    """np.savez stores arrays as they are; a compressed member many times the file's size is a zip bomb."""
    path = os.path.join(real_copy, "weights.npz")
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["embedding"] = np.zeros((1_000_000, arrays["embedding"].shape[1]), np.float32)
    np.savez_compressed(path, **arrays)
    rewrite_file(real_copy, "weights.npz", open(path, "rb").read())
    refused(capsys, real_copy, "unpacks to more bytes than the whole file holds", "numpy")
