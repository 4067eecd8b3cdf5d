"""The TFLite T=1 step: float32 and dynamic-range int8, builtin ops only, checked in the flatbuffer.

The step is the cell written out with constant weights (stepgraph.py). The converter gets an empty
tf.Module as trackable object only so that it writes a signature (ids, state -> logits, new_state);
with no variables anywhere, no VAR_HANDLE/READ_VARIABLE ops can appear, and the check proves it.
"""

import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from .errors import ExportError
from .stepgraph import step_function

# Ops that mean the file is not self-contained: its weights live in variables it cannot load.
VARIABLE_OPS = {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"}
_OP_NAMES = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
_BUILTIN_NAMES = set(_OP_NAMES.values()) - {"CUSTOM"}


def convert_step(weights, int8=False, fold=True) -> bytes:
    # Batch dynamic in the graph (the runtime resizes it for several streams); the file's shape is 1.
    step = step_function(weights, batch_size=None, fold=fold).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([step], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no dataset: dynamic-range weights
        # Per-tensor scales: tflite-runtime 2.14 cannot load the per-channel FULLY_CONNECTED (v12+).
        converter._experimental_disable_per_channel = True
    return converter.convert()


def operators(model_bytes) -> list:
    """[(op name, version)] from the flatbuffer's operator codes; custom ops (Flex...) by their custom name."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    ops = []
    for code in model.operatorCodes:
        # Builtins past 127 live in builtinCode only; older files fill deprecatedBuiltinCode only.
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        ops.append((custom if builtin == schema.BuiltinOperator.CUSTOM else _OP_NAMES[builtin], code.version))
    return ops


def check_builtin_only(model_bytes, label):
    names = [name for name, _ in operators(model_bytes)]
    bad = sorted({n for n in names if n in VARIABLE_OPS or n not in _BUILTIN_NAMES})  # custom: Flex...
    if bad:
        raise ExportError(f"{label} uses ops that are not self-contained builtins: {bad} "
                          f"(all ops: {sorted(set(names))})")


def write_tflite(weights, path, int8=False, fold=True):
    """fold=False: the unfolded graph, for the bench's baseline only."""
    model_bytes = convert_step(weights, int8=int8, fold=fold)
    check_builtin_only(model_bytes, path)
    with open(path, "wb") as f:
        f.write(model_bytes)
