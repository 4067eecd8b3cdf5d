"""What an ONNX file holds, read from its protobuf before ONNX Runtime sees it.

A tensor of an ONNX graph may keep its data in another file (data_location EXTERNAL, external_data
{location: ...}), which ONNX Runtime then opens relative to the working directory: an export could
read any file the user can. `estella export` writes every tensor inside the one file, so a tensor
stored elsewhere is refused, wherever it is: an initializer, a Constant's attribute, a subgraph of
an If or a Loop, a local function. The same walk collects the float tensors (which must be finite)
and tells whether the graph holds int8 tensors (which only the int8 artifact has).

The walk reads the protobuf wire format directly: the runtime needs no `onnx` package, which the
runtime-only install does not have. Field numbers are those of onnx/onnx.proto3.
"""

import numpy as np

from .base import ArtifactError

# ModelProto / GraphProto / NodeProto / AttributeProto / FunctionProto / SparseTensorProto fields
MODEL_GRAPH, MODEL_FUNCTIONS = 7, 25
GRAPH_NODES, GRAPH_INITIALIZERS, GRAPH_SPARSE_INITIALIZERS = 1, 5, 15
NODE_ATTRIBUTES = 5
ATTRIBUTE_TENSOR, ATTRIBUTE_GRAPH, ATTRIBUTE_TENSORS, ATTRIBUTE_GRAPHS = 5, 6, 10, 11
ATTRIBUTE_SPARSE_TENSOR, ATTRIBUTE_SPARSE_TENSORS = 22, 23
FUNCTION_NODES = 7
SPARSE_VALUES, SPARSE_INDICES = 1, 2
# TensorProto
TENSOR_DATA_TYPE, TENSOR_FLOAT_DATA, TENSOR_NAME, TENSOR_RAW_DATA = 2, 4, 8, 9
TENSOR_DOUBLE_DATA, TENSOR_EXTERNAL_DATA, TENSOR_DATA_LOCATION = 10, 13, 14
FLOAT, UINT8, INT8, DOUBLE = 1, 2, 3, 11
MAX_DEPTH = 64  # subgraphs nest; a deeper file is not one estella wrote


class OnnxContents:
    """What the walk found: float tensors (name, array) and whether any tensor is int8 or uint8."""

    def __init__(self):
        self.float_tensors = []
        self.quantized = False


def check_onnx(artifact, data) -> OnnxContents:
    """Raise ArtifactError if the model keeps a tensor outside the file or is not a readable protobuf."""
    contents = OnnxContents()
    try:
        for field, _, value in _fields(data):
            if field == MODEL_GRAPH:
                _graph(value, contents, 0)
            elif field == MODEL_FUNCTIONS:
                for f, _, node in _fields(value):
                    if f == FUNCTION_NODES:
                        _node(node, contents, 0)
    except _External as e:
        raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}) is refused before ONNX Runtime "
                            f"loads it: tensor {e.name!r} keeps its data in another file; an estella export "
                            "holds every tensor in its one file; re-export it") from None
    except (_Malformed, IndexError, ValueError) as e:
        raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}) is not a readable ONNX model "
                            f"({e}); re-export it") from None
    return contents


class _External(Exception):
    def __init__(self, name):
        self.name = name


class _Malformed(Exception):
    pass


def _graph(data, contents, depth):
    if depth > MAX_DEPTH:
        raise _Malformed("subgraphs nested too deeply")
    for field, _, value in _fields(data):
        if field == GRAPH_NODES:
            _node(value, contents, depth)
        elif field == GRAPH_INITIALIZERS:
            _tensor(value, contents)
        elif field == GRAPH_SPARSE_INITIALIZERS:
            _sparse(value, contents)


def _node(data, contents, depth):
    for field, _, attribute in _fields(data):
        if field != NODE_ATTRIBUTES:
            continue
        for f, _, value in _fields(attribute):
            if f in (ATTRIBUTE_TENSOR, ATTRIBUTE_TENSORS):
                _tensor(value, contents)
            elif f in (ATTRIBUTE_GRAPH, ATTRIBUTE_GRAPHS):
                _graph(value, contents, depth + 1)
            elif f in (ATTRIBUTE_SPARSE_TENSOR, ATTRIBUTE_SPARSE_TENSORS):
                _sparse(value, contents)


def _sparse(data, contents):
    for field, _, value in _fields(data):
        if field in (SPARSE_VALUES, SPARSE_INDICES):
            _tensor(value, contents)


def _tensor(data, contents):
    name, data_type, external, raw, floats = "", 0, False, None, []
    for field, wire, value in _fields(data):
        if field == TENSOR_NAME:
            name = bytes(value).decode("utf-8", "replace")
        elif field == TENSOR_DATA_TYPE:
            data_type = value
        elif field == TENSOR_EXTERNAL_DATA or (field == TENSOR_DATA_LOCATION and value != 0):
            external = True
        elif field == TENSOR_RAW_DATA:
            raw = value
        elif field == TENSOR_FLOAT_DATA:
            floats.append(np.frombuffer(value, "<f4") if wire == 2 else np.array([value], "<u4").view("<f4"))
        elif field == TENSOR_DOUBLE_DATA:
            floats.append(np.frombuffer(value, "<f8") if wire == 2 else np.array([value], "<u8").view("<f8"))
    if external:
        raise _External(name)
    if data_type in (INT8, UINT8):
        contents.quantized = True
    elif data_type in (FLOAT, DOUBLE):
        if raw is not None:
            dtype = "<f4" if data_type == FLOAT else "<f8"
            if len(raw) % np.dtype(dtype).itemsize:
                raise _Malformed(f"tensor {name!r} has raw data of {len(raw)} bytes")
            floats.append(np.frombuffer(raw, dtype))
        contents.float_tensors.extend((name, array) for array in floats)


def _fields(data):
    """(field number, wire type, value) of a protobuf message: an int, or a memoryview of its bytes."""
    data = memoryview(data)
    at, end = 0, len(data)
    while at < end:
        key, at = _varint(data, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
        elif wire == 1:
            value, at = int.from_bytes(data[at:at + 8], "little"), at + 8
        elif wire == 2:
            size, at = _varint(data, at)
            value, at = data[at:at + size], at + size
        elif wire == 5:
            value, at = int.from_bytes(data[at:at + 4], "little"), at + 4
        else:
            raise _Malformed(f"wire type {wire}")
        if at > end:
            raise _Malformed("a field runs past the end of the file")
        yield field, wire, value


def _varint(data, at):
    result = shift = 0
    while True:
        byte = data[at]
        at += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, at
        shift += 7
        if shift > 63:
            raise _Malformed("a varint longer than 10 bytes")
