"""The TFLite step graphs (float32 and dynamic-range int8) through LiteRT, or tflite-runtime where that is installed.

The step is run through set_tensor / invoke / get_tensor on tensor indices found once by name,
which costs less per call than a signature runner. The graph is exported for batch 1; a larger
batch resizes the inputs of the one interpreter, which measured 3-6x faster than one interpreter per
stream (U=1024, B=4: 0.26 ms against 1.3 ms per step float32, 0.05 against 0.2 ms int8), since
the weights are read once per step for all streams.

Resizing costs a re-allocation (about half an int8 step at U=512, B=32), and a server's batch
changes whenever a stream joins or leaves. So the interpreter is allocated for a bucket, the next
power of two, and a batch of at least half of it is padded with zero rows up to it: each row of a
step depends on that row alone, so the padding changes no result, and a batch that moves between
16 and 32 rows never re-allocates.
"""

import os

import numpy as np

from ..errors import MissingDependency
from ..quiet import library_logs_filtered
from .artifact_checks import check_finite, check_precision
from .base import ArtifactError, Backend, check_signature


def interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise MissingDependency("the tflite backend needs LiteRT, which is not installed: "
                                    "pip install 'estella[tflite]'") from None
    return Interpreter


class TFLiteBackend(Backend):
    name = "tflite"

    @classmethod
    def check_installed(cls):
        interpreter_class()

    def __init__(self, export_dir, artifact, manifest, content=None, num_threads=None):
        Interpreter = interpreter_class()
        self.path = os.path.join(export_dir, artifact["path"])
        # LiteRT runs one thread unless told; one per core measured 1.5-1.9x faster float32 at U=512-1024.
        # model_content: the verified bytes themselves, never the path again (it could have changed since).
        try:
            with library_logs_filtered():  # LiteRT's INFO line about its XNNPACK delegate
                self.interpreter = Interpreter(model_content=content, num_threads=num_threads or os.cpu_count())
                check_tensors(self.interpreter, artifact)  # before allocation: only constants hold data
                self.interpreter.allocate_tensors()
            inputs, outputs = _details_by_name(self.interpreter)
        except (ValueError, RuntimeError, UnicodeDecodeError) as e:  # a tensor name of invalid UTF-8, too
            raise ArtifactError(f"LiteRT cannot load artifact {artifact['name']!r} ({artifact['path']}): {e}") from None
        specs = {name: ([int(n) for n in d["shape"]], np.dtype(d["dtype"]).name)
                 for name, d in {**inputs, **outputs}.items()}
        self.vocab_size, self.state_size, batch, time = check_signature(artifact, specs)
        self.ids_index, self.state_index = inputs["ids"]["index"], inputs["state"]["index"]
        self.logits_index, self.new_state_index = outputs["logits"]["index"], outputs["new_state"]["index"]
        self.precision = artifact["precision"]
        self.max_batch, self.max_time = batch, time
        self.batch = self.max_batch  # the batch the interpreter is allocated for now

    def _step(self, ids, state):
        rows = ids.shape[0]
        if not rows <= self.batch <= 2 * rows:  # at most half the allocated rows are padding
            self._resize(bucket(rows))
        if rows < self.batch:
            ids = np.concatenate([ids, np.zeros((self.batch - rows, ids.shape[1]), ids.dtype)])
            state = np.concatenate([state, np.zeros((self.batch - rows, state.shape[1]), state.dtype)])
        interpreter = self.interpreter
        interpreter.set_tensor(self.ids_index, ids)
        interpreter.set_tensor(self.state_index, state)
        interpreter.invoke()
        logits, new_state = interpreter.get_tensor(self.logits_index), interpreter.get_tensor(self.new_state_index)
        return (logits[:rows], new_state[:rows]) if rows < self.batch else (logits, new_state)

    def _resize(self, batch):
        self.interpreter.resize_tensor_input(self.ids_index, [batch, 1])
        self.interpreter.resize_tensor_input(self.state_index, [batch, self.state_size])
        self.interpreter.allocate_tensors()  # silent (unlike the first allocation): no log filter
        self.batch = batch


def bucket(rows):
    """The batch an interpreter is allocated for to run `rows` rows: the next power of two."""
    return 1 << (rows - 1).bit_length()


QUANTIZED_MIN_ELEMENTS = 1024


def check_tensors(interpreter, artifact):
    """Finite float constants and quantization scales; int8 tensors exactly where the manifest says int8."""
    floats, quantized = [], False
    for detail in interpreter.get_tensor_details():
        quantized = quantized or detail["dtype"] == np.int8
        floats.append((detail["name"], np.asarray(detail["quantization_parameters"]["scales"])))
        if detail["dtype"] == np.float32:
            try:
                floats.append((detail["name"], interpreter.get_tensor(detail["index"])))
            except ValueError:  # no data before allocate_tensors: not a constant
                pass
    check_finite(artifact, floats)
    # The converter quantizes a weight of at least 1024 elements (TFLite's dynamic-range threshold).
    check_precision(artifact, quantized, quantizable=any(array.size >= QUANTIZED_MIN_ELEMENTS for _, array in floats))


def _details_by_name(interpreter):
    """Input and output tensor details keyed by the step's names (ids, state; logits, new_state).

    The converter may prefix names (serving_default_ids:0) or keep only the signature's names,
    so the signature is asked first and the tensor names are matched by their ending otherwise.
    """
    signatures = interpreter.get_signature_list()
    if signatures:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        inputs, outputs = runner.get_input_details(), runner.get_output_details()
        if {"ids", "state"} <= inputs.keys() and {"logits", "new_state"} <= outputs.keys():
            return inputs, outputs
    inputs = _match(interpreter.get_input_details(), ("ids", "state"))
    outputs = _match(interpreter.get_output_details(), ("new_state", "logits"))
    return inputs, outputs


def _match(details, names):
    found = {}
    for name in names:  # new_state before logits/state, so "state" never claims new_state's tensor
        for d in details:
            base = d["name"].split(":")[0]
            if d["index"] not in (f["index"] for f in found.values()) and (base == name or base.endswith("_" + name)):
                found[name] = d
                break
        else:
            raise ArtifactError(f"the tflite graph has no tensor named {name!r}; "
                               f"it has {[d['name'] for d in details]} (re-export it with `estella export`)")
    return found
