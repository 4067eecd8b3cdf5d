"""The TFLite step through TensorFlow Lite Micro (the `tflite-micro` package): what a microcontroller runs.

TFLite Micro runs one fixed-shape graph in one preallocated arena: batch 1, one character, no
resizing, so a batch of streams is stepped one row at a time. It needs full-integer models (int8
weights and activations; the `int8-full` artifact), though a float32 step runs too. The arena is
the size the manifest records, which the export measured with this same interpreter: a device
build allocates exactly that much.
"""

import json
import subprocess
import sys

import numpy as np

from ..errors import MissingDependency
from .base import ArtifactError, Backend, check_signature

# Arenas outside these bounds are refused whatever a manifest says; a real step graph needs several KB.
MIN_ARENA = 4096
MAX_ARENA = 1 << 30
STEP_NAMES = {"inputs": ("ids", "state"), "outputs": ("logits", "new_state")}
TENSOR_TYPES = {0: "float32", 2: "int32", 9: "int8"}  # the flatbuffer's TensorType values that a step uses


def micro_runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise MissingDependency("the tflm backend needs TensorFlow Lite Micro, which is not installed: "
                                "pip install 'estella[micro]'") from None
    return runtime


def signature_tensors(model_bytes) -> dict:
    """{name: (\"inputs\"|\"outputs\", position, shape, dtype)} of the serving_default signature's tensors.

    The Micro interpreter addresses inputs and outputs by position only, so the names the export
    gave them are read from the file's SignatureDef, with their shapes and types, before any
    interpreter is made."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    try:
        model = schema.Model.GetRootAsModel(bytearray(model_bytes), 0)
        subgraph = model.Subgraphs(0)
        lists = {"inputs": [subgraph.Inputs(i) for i in range(subgraph.InputsLength())],
                 "outputs": [subgraph.Outputs(i) for i in range(subgraph.OutputsLength())]}
        found = {}
        for s in range(model.SignatureDefsLength()):
            signature = model.SignatureDefs(s)
            for kind, length, get in (("inputs", signature.InputsLength(), signature.Inputs),
                                      ("outputs", signature.OutputsLength(), signature.Outputs)):
                for i in range(length):
                    entry = get(i)
                    tensor = subgraph.Tensors(entry.TensorIndex())
                    shape = [int(tensor.Shape(d)) for d in range(tensor.ShapeLength())]
                    found[entry.Name().decode("utf-8")] = (kind, lists[kind].index(entry.TensorIndex()), shape,
                                                           TENSOR_TYPES.get(tensor.Type(), f"type {tensor.Type()}"))
    except (ValueError, IndexError, AttributeError, UnicodeDecodeError, TypeError) as e:
        raise ArtifactError(f"the tflite file's signature cannot be read: {e}") from None
    return found


class TFLMBackend(Backend):
    name = "tflm"
    max_batch = 1
    max_time = 1

    @classmethod
    def check_installed(cls):
        micro_runtime()

    def __init__(self, export_dir, artifact, manifest, content=None, num_threads=None):
        runtime = micro_runtime()
        where = f"artifact {artifact['name']!r} ({artifact['path']})"
        arena = artifact.get("arena_bytes")
        if isinstance(arena, bool) or not isinstance(arena, int) or not MIN_ARENA <= arena <= MAX_ARENA:
            raise ArtifactError(f"{where} has no arena_bytes (an integer from {MIN_ARENA} to 2^30) in the manifest; "
                                "the tflm backend needs the arena size the export measured")
        tensors = signature_tensors(content)
        if any(tensors.get(name, (None,))[0] != kind for kind, names in STEP_NAMES.items() for name in names):
            raise ArtifactError(f"{where} is not an estella step graph: its signature has {sorted(tensors)}, "
                                "not ids, state -> logits, new_state; re-export it")
        specs = {name: (shape, dtype) for name, (_, _, shape, dtype) in tensors.items()}
        self.vocab_size, self.state_size, _, _ = check_signature(artifact, specs)
        if [tensors["ids"][2], tensors["state"][2]] != [[1, 1], [1, self.state_size]]:
            raise ArtifactError(f"{where} is not a batch-1, one-character step: ids {tensors['ids'][2]}, "
                                f"state {tensors['state'][2]}; re-export it")
        inputs = {pos: (shape, dtype) for kind, pos, shape, dtype in tensors.values() if kind == "inputs"}
        if not fits_arena(content, arena, inputs):
            raise ArtifactError(f"TFLite Micro cannot load {where} in an arena of {arena} bytes (the manifest's "
                                "arena_bytes); re-export it")
        try:  # the same allocation just succeeded in a child process: it is deterministic
            self.interpreter = runtime.Interpreter.from_bytes(bytes(content), arena_size=arena)
        except (ValueError, RuntimeError) as e:
            raise ArtifactError(f"TFLite Micro cannot load {where} in an arena of {arena} bytes: {e}") from None
        self.ids_pos, self.state_pos = tensors["ids"][1], tensors["state"][1]
        self.logits_pos, self.new_state_pos = tensors["logits"][1], tensors["new_state"][1]
        self.precision = artifact["precision"]
        self.arena_bytes = arena

    def _step(self, ids, state):
        logits = np.empty((ids.shape[0], 1, self.vocab_size), np.float32)
        new_state = np.empty_like(state)
        interpreter = self.interpreter
        for row in range(ids.shape[0]):  # one fixed-shape graph: each stream in turn
            interpreter.set_input(ids[row:row + 1], self.ids_pos)
            interpreter.set_input(state[row:row + 1], self.state_pos)
            interpreter.invoke()
            logits[row] = interpreter.get_output(self.logits_pos).reshape(1, self.vocab_size)
            new_state[row] = interpreter.get_output(self.new_state_pos).reshape(-1)
        return logits, new_state


def measure_arena(model_bytes, shapes, upper=1 << 24) -> int:
    """The smallest arena (bytes) in which TFLite Micro allocates and runs the graph: a binary search
    over real allocations, each in a child process (fits_arena). shapes: {input position: (shape, dtype)}."""
    if not fits_arena(model_bytes, upper, shapes):
        raise ArtifactError(f"TFLite Micro cannot run the graph even in an arena of {upper} bytes")
    low, high = MIN_ARENA, upper
    while low < high:
        middle = (low + high) // 2
        if fits_arena(model_bytes, middle, shapes):
            high = middle
        else:
            low = middle + 1
    return low


def fits_arena(model_bytes, arena, shapes) -> bool:
    """Whether the graph allocates and runs in `arena` bytes, tried in a child process: the Python
    wrapper of TFLite Micro crashes the process (SIGSEGV) for some arenas too small, instead of
    raising, so an arena is only ever tried for the first time where a crash costs nothing.
    shapes: {input position: (shape, dtype name)}; the inputs are zeros."""
    probe = ("import sys, json, numpy as np; from tflite_micro.python.tflite_micro import runtime; "
             "it = runtime.Interpreter.from_bytes(sys.stdin.buffer.read(), arena_size=int(sys.argv[1])); "
             "[it.set_input(np.zeros(s, d), int(p)) for p, (s, d) in json.loads(sys.argv[2]).items()]; it.invoke()")
    done = subprocess.run([sys.executable, "-c", probe, str(arena), json.dumps(shapes)], input=bytes(model_bytes),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return done.returncode == 0
