"""The ONNX T=1 step through tf2onnx (float32), and its int8 copy by ONNX Runtime's quantize_dynamic.

The cell is written out (stepgraph.py), so the file holds Gather/MatMul/Sigmoid/Tanh and no Loop.
The int8 file quantizes the MatMuls' weights; the Gather's folded input table stays float32.
"""

import onnx
import tf2onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from .errors import ExportError
from .stepgraph import step_function

OPSET = 17
LOOP_OPS = {"Loop", "Scan"}


def write_onnx(weights, path, fold=True):
    """fold=False: the unfolded graph, for the bench's baseline only."""
    step = step_function(weights, batch_size=None, fold=fold)
    model, _ = tf2onnx.convert.from_function(step, input_signature=step.input_signature, opset=OPSET)
    # tf2onnx names the dynamic dimension "unk__N"; the runtime and readers want one name for it.
    for value in list(model.graph.input) + list(model.graph.output):
        batch = value.type.tensor_type.shape.dim[0]
        if batch.dim_param:
            batch.dim_param = "batch"
    loops = sorted({node.op_type for node in model.graph.node} & LOOP_OPS)
    if loops:
        raise ExportError(f"{path}: the T=1 step graph contains {loops}; it must be plain ops")
    onnx.save(model, path)
    check(path)


def write_onnx_int8(float_path, path):
    # MatMul only: the folded input table stays float32. Quantizing its Gather too (the default)
    # adds a DequantizeLinear per step and error, to save 0.4 MB at V=81, U=512 (measured on the
    # default preset: 19.3 vs 18.9 us a step, max |delta logits| 0.085 vs 0.048 over 3000 chars).
    quantize_dynamic(float_path, path, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
    check(path)


def check(path):
    try:
        onnx.checker.check_model(path, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{path} fails onnx.checker.check_model(full_check=True): {e}") from None
