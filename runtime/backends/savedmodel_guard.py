"""A SavedModel is a program, not data: its graph may read, write or run anything TensorFlow can, and
TensorFlow runs parts of it (a TF1 main_op, a resource's initializer) the moment it is loaded. So
the saved_model.pb protobuf is checked before TensorFlow loads anything, against what
`estella export` writes (export/savedmodel.py):

- one meta graph, tagged "serve", with a TF2 object graph (a TF1 SavedModel has none, and its
  loader runs the main_op); no assets; no collection but the main op; the init op a bare NoOp;
- objects: the module, its dict of variables, functions, variables; nothing TensorFlow revives with
  code of its own (a resource's initializer, an asset, a registered class);
- every op, in the graph and in every function of its library, on an allowlist of side-effect-free
  compute ops; the checkpoint ops (SaveV2, RestoreV2, ...), which touch files, only in the functions
  that saver_def names and that nothing else calls (TensorFlow 2 restores variables itself and
  never runs them);
- the folder holds saved_model.pb, fingerprint.pb and variables/ only.

The allowlist is what the step graphs of every cell and layer count use (the `estella export` of a
real run), plus the few ops a later export could use for the same arithmetic.
"""

import re

from .base import ArtifactError

# Compute ops: pure functions of their inputs and of the model's own variables.
COMPUTE_OPS = frozenset({
    "Add", "AddV2", "Sub", "Mul", "RealDiv", "Div", "Neg", "Square", "Sqrt", "Rsqrt", "Exp", "Log",
    "Maximum", "Minimum", "Sigmoid", "Tanh", "Relu", "Softmax", "LogSoftmax", "BiasAdd",
    "MatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum",
    "Split", "SplitV", "ConcatV2", "Slice", "StridedSlice", "Reshape", "Transpose", "Squeeze", "ExpandDims",
    "Pack", "Unpack", "Tile", "BroadcastTo", "Fill", "ZerosLike", "OnesLike", "Range", "Shape", "ShapeN",
    "Rank", "Size", "Cast", "GatherV2", "ResourceGather", "ReadVariableOp", "Identity", "IdentityN",
    "StopGradient", "Snapshot", "Const", "NoOp", "Placeholder", "Select", "SelectV2",
    "Less", "LessEqual", "Greater", "GreaterEqual", "Equal", "NotEqual", "LogicalAnd", "LogicalOr", "LogicalNot",
    "Max", "Min", "Sum", "Mean", "ArgMax",
    "While", "StatelessWhile", "If", "StatelessIf", "PartitionedCall", "StatefulPartitionedCall",
    "TensorListFromTensor", "TensorListReserve", "TensorListStack", "TensorListGetItem", "TensorListSetItem",
    "TensorListLength", "TensorListElementShape",
    "StatelessMultinomial", "StatelessRandomUniformV2", "StatelessRandomGetKeyCounter",
})
# Top-level graph nodes: the variables' handles, the signatures' placeholders and calls.
GRAPH_OPS = frozenset({"VarHandleOp", "ReadVariableOp", "Placeholder", "StatefulPartitionedCall",
                       "PartitionedCall", "NoOp", "Const"})
# The checkpoint's save and restore functions (named by saver_def): these touch files.
SAVER_OPS = COMPUTE_OPS | {"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename", "StringJoin",
                           "StaticRegexFullMatch", "AssignVariableOp", "DisableCopyOnRead"}
OBJECT_KINDS = frozenset({"user_object", "variable", "function", "bare_concrete_function"})
USER_OBJECTS = frozenset({"_generic_user_object", "trackable_dict_wrapper", "trackable_list_wrapper",
                          "trackable_tuple_wrapper", "signature_map"})
SIGNATURES = frozenset({"serving_default", "sample", "__saved_model_init_op"})
FILES = re.compile(r"saved_model\.pb|fingerprint\.pb|variables/variables\.index|"
                   r"variables/variables\.data-\d{5}-of-\d{5}")


def check_files(artifact, names):
    """names: the artifact's files relative to its folder; only a SavedModel's own files are allowed."""
    for name in names:
        if not FILES.fullmatch(name):
            _refuse(artifact, f"it holds {name!r}; an estella SavedModel holds saved_model.pb, fingerprint.pb "
                              "and variables/ only (no assets)")
    if "saved_model.pb" not in names:
        _refuse(artifact, "it has no saved_model.pb")


def check_saved_model(artifact, data):
    """Raise ArtifactError unless saved_model.pb (bytes) is a graph that `estella export` could have written."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    model = saved_model_pb2.SavedModel()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as e:
        _refuse(artifact, f"saved_model.pb is not a SavedModel protobuf ({e})")
    if len(model.meta_graphs) != 1 or list(model.meta_graphs[0].meta_info_def.tags) != ["serve"]:
        _refuse(artifact, "it must hold one meta graph tagged 'serve'")
    meta = model.meta_graphs[0]
    if not meta.object_graph_def.nodes:
        _refuse(artifact, "it is a TensorFlow 1 SavedModel (no object graph), whose loader runs its main_op")
    if meta.asset_file_def:
        _refuse(artifact, "it names asset files")
    _check_init_op(artifact, meta)
    _check_objects(artifact, meta.object_graph_def)
    _check_ops(artifact, meta)


def _check_init_op(artifact, meta):
    nodes = {node.name: node for node in meta.graph_def.node}
    init_names = []
    for key, collection in meta.collection_def.items():
        if key != "saved_model_main_op":
            _refuse(artifact, f"it has a graph collection {key!r} (an init or table op)")
        init_names += list(collection.node_list.value)
    for key, signature in meta.signature_def.items():
        if key not in SIGNATURES:
            _refuse(artifact, f"it has a signature {key!r}; estella writes serving_default and sample")
        if key == "__saved_model_init_op":
            init_names += [t.name.split(":")[0] for t in signature.outputs.values()]
    for name in init_names:
        node = nodes.get(name)
        if node is None or node.op != "NoOp" or node.input:
            _refuse(artifact, f"its init op {name!r} does something: estella's is a bare NoOp")


def _check_objects(artifact, object_graph):
    for node in object_graph.nodes:
        kind = node.WhichOneof("kind")
        if kind not in OBJECT_KINDS:
            _refuse(artifact, f"its object graph holds a {kind!r}, which TensorFlow restores by running code")
        if kind == "user_object" and node.user_object.identifier not in USER_OBJECTS:
            _refuse(artifact, f"its object graph holds a {node.user_object.identifier!r} object")
        if node.registered_name or node.saveable_objects:
            _refuse(artifact, "its object graph holds an object with a custom saver")


def _check_ops(artifact, meta):
    functions = {f.signature.name: f for f in meta.graph_def.library.function}
    saver_nodes = {meta.saver_def.save_tensor_name.split(":")[0], meta.saver_def.restore_op_name.split(":")[0]}
    saver_nodes.discard("")
    compute_roots, saver_roots = set(), set()
    for node in meta.graph_def.node:
        if node.op not in GRAPH_OPS:
            _refuse(artifact, f"its graph runs the op {node.op!r}, which estella's step graphs never use")
        (saver_roots if node.name in saver_nodes else compute_roots).update(_called(node))
    for node in meta.object_graph_def.nodes:
        kind = node.WhichOneof("kind")
        if kind == "function":
            compute_roots.update(node.function.concrete_functions)
        elif kind == "bare_concrete_function":
            compute_roots.add(node.bare_concrete_function.concrete_function_name)
    compute = _reachable(compute_roots, functions)
    # every function not reachable from the saver alone is held to the compute allowlist, called or not
    saver_only = _reachable(saver_roots, functions) - compute
    for name, function in functions.items():
        allowed = SAVER_OPS if name in saver_only else COMPUTE_OPS
        for node in function.node_def:
            if node.op not in allowed:
                _refuse(artifact, f"its function {name!r} runs the op {node.op!r}, which estella's step graphs "
                                  "never use (no file, network or process ops are loaded)")


def _called(node):
    """Names of the functions a node calls through its attributes (f, body, cond, branches, ...)."""
    names = []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names.extend(f.name for f in value.list.func)
    return names


def _reachable(roots, functions):
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        for node in functions[name].node_def:
            todo.extend(_called(node))
    return seen


def _refuse(artifact, why):
    raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}) is refused before TensorFlow loads it: "
                        f"{why}; re-export it with `estella export`")
