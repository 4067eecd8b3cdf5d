"""The full-integer TFLite step for microcontrollers (TensorFlow Lite Micro): precision `int8-full`.

TFLite Micro has no hybrid kernels (float activations with int8 weights: "FLOAT32 with filter type
INT8 not supported"), so this file quantizes activations too, with ranges calibrated by running the
float step along the run's training text. The interface stays float32 (`state` in, `logits` and
`new_state` out; `ids` int32): the converter puts one QUANTIZE after `state` and a DEQUANTIZE before
each output, so the runtime and the sampler treat it like every other artifact. Batch 1, one
character: a microcontroller steps one stream and allocates one fixed arena, whose size the
export measures with the Micro interpreter and records in the manifest.
"""

import numpy as np
import tensorflow as tf

from estella.runtime.backends.tflm import measure_arena, signature_tensors

from .errors import ExportError
from .stepgraph import step_function
from .tflite import check_builtin_only, operators

PRECISION = "int8-full"
# Builtin ops with int8 kernels in TFLite Micro that the step graphs lower to: anything else is refused
# at export, so a file that loads here also links on a device with the same op resolver.
MICRO_OPS = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "GATHER", "SPLIT", "FULLY_CONNECTED", "ADD", "SUB", "MUL",
             "LOGISTIC", "TANH", "CONCATENATION", "STRIDED_SLICE", "SLICE", "SPLIT_V"}
CALIBRATION_SEGMENTS = 8  # stretches of the training text, spread over it, each from the zero state
CALIBRATION_CHARS = 250  # characters per stretch
CALIBRATION_FALLBACK_CHARS = 2000  # sampled by the model itself, for a run without its corpus file


def calibration_ids(train_ids, segments=CALIBRATION_SEGMENTS, chars=CALIBRATION_CHARS) -> list:
    """Stretches of `chars` ids spread evenly over the training text (all of it if it is shorter)."""
    train_ids = np.asarray(train_ids, np.int32)
    if len(train_ids) <= segments * chars:
        return [train_ids]
    starts = np.linspace(0, len(train_ids) - chars, segments).astype(int)
    return [train_ids[s:s + chars] for s in starts]


def calibration_samples(step, stretches) -> list:
    """(ids [1, 1], state [1, S]) pairs: each state is the float step's own along the text, so the
    calibrated ranges are those the device will meet while generating. step: step_function(weights, 1)."""
    samples = []
    for stretch in stretches:
        state = np.zeros(step.input_signature[1].shape, np.float32)
        for i in stretch:
            ids = np.array([[i]], np.int32)
            samples.append((ids, state))
            state = step(tf.constant(ids), tf.constant(state))["new_state"].numpy()
    return samples


def convert_int8_full(step, samples) -> bytes:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([step.get_concrete_function()], tf.Module())
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ({"ids": ids, "state": state} for ids, state in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def check_micro_ops(model_bytes, label):
    check_builtin_only(model_bytes, label)
    names = {name for name, _ in operators(model_bytes)}
    if not names <= MICRO_OPS:
        raise ExportError(f"{label} uses ops that TFLite Micro cannot run at int8: {sorted(names - MICRO_OPS)}")


def write_tflite_int8_full(weights, path, train_ids) -> int:
    """Write the int8-full step to `path`; return the arena it needs in TFLite Micro, in bytes."""
    step = step_function(weights, batch_size=1)
    model_bytes = convert_int8_full(step, calibration_samples(step, calibration_ids(train_ids)))
    check_micro_ops(model_bytes, path)
    inputs = {pos: (shape, dtype) for kind, pos, shape, dtype in signature_tensors(model_bytes).values()
              if kind == "inputs"}
    arena = measure_arena(model_bytes, inputs)
    with open(path, "wb") as f:
        f.write(model_bytes)
    return arena
