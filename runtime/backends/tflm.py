"""The TFLite step through TensorFlow Lite Micro (the `tflite-micro` package): what a microcontroller runs.

TFLite Micro runs one fixed-shape graph in one preallocated arena: batch 1, one character, no
resizing, so a batch of streams is stepped one row at a time. It needs full-integer models (int8
weights and activations; the `int8-full` artifact), though a float32 step runs too. The arena is
the size the manifest records, which the export measured with this same interpreter: a device
build allocates exactly that much.
"""

import contextlib
import os
import sys

import numpy as np

from ..errors import MissingDependency
from .base import ArtifactError, Backend, check_signature

# The Python wrapper of TFLite Micro crashes (SIGSEGV, not an error) when an arena cannot even hold
# the interpreter's own bookkeeping (seen below ~0.5 KB), so no arena below this is ever asked for,
# whatever a manifest says; a real step graph needs several KB anyway.
MIN_ARENA = 4096
MAX_ARENA = 1 << 30
STEP_NAMES = {"inputs": ("ids", "state"), "outputs": ("logits", "new_state")}


def micro_runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise MissingDependency("the tflm backend needs TensorFlow Lite Micro, which is not installed: "
                                "pip install 'estella[micro]'") from None
    return runtime


def signature_positions(model_bytes) -> dict:
    """{tensor name: (\"inputs\"|\"outputs\", position)} from the flatbuffer's serving_default signature.

    The Micro interpreter addresses inputs and outputs by position only, so the names the export
    gave them are read from the file's SignatureDef once."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    try:
        model = schema.Model.GetRootAsModel(bytearray(model_bytes), 0)
        subgraph = model.Subgraphs(0)
        lists = {"inputs": [subgraph.Inputs(i) for i in range(subgraph.InputsLength())],
                 "outputs": [subgraph.Outputs(i) for i in range(subgraph.OutputsLength())]}
        positions = {}
        for s in range(model.SignatureDefsLength()):
            signature = model.SignatureDefs(s)
            for kind, length, get in (("inputs", signature.InputsLength(), signature.Inputs),
                                      ("outputs", signature.OutputsLength(), signature.Outputs)):
                for i in range(length):
                    entry = get(i)
                    positions[entry.Name().decode("utf-8")] = (kind, lists[kind].index(entry.TensorIndex()))
    except (ValueError, IndexError, AttributeError, UnicodeDecodeError, TypeError) as e:
        raise ArtifactError(f"the tflite file's signature cannot be read: {e}") from None
    return positions


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
        positions = signature_positions(content)
        wanted = {name: kind for kind, names in STEP_NAMES.items() for name in names}
        if any(positions.get(name, (None,))[0] != kind for name, kind in wanted.items()):
            raise ArtifactError(f"{where} is not an estella step graph: its signature has {sorted(positions)}, "
                                "not ids, state -> logits, new_state; re-export it")
        try:
            self.interpreter = runtime.Interpreter.from_bytes(bytes(content), arena_size=arena)
            details = {name: (self.interpreter.get_input_details(pos) if kind == "inputs"
                              else self.interpreter.get_output_details(pos))
                       for name, (kind, pos) in positions.items() if name in wanted}
        except (ValueError, RuntimeError) as e:
            raise ArtifactError(f"TFLite Micro cannot load {where} in an arena of {arena} bytes: {e}") from None
        specs = {name: ([int(n) for n in d["shape"]], np.dtype(d["dtype"]).name) for name, d in details.items()}
        self.vocab_size, self.state_size, _, _ = check_signature(artifact, specs)
        self.ids_pos, self.state_pos = positions["ids"][1], positions["state"][1]
        self.logits_pos, self.new_state_pos = positions["logits"][1], positions["new_state"][1]
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


def measure_arena(model_bytes, feeds, upper=1 << 24) -> int:
    """The smallest arena (bytes) in which TFLite Micro allocates and runs the graph: a binary search
    over real allocations, each checked by one invoke on `feeds` ({position: array})."""
    runtime = micro_runtime()
    with _stderr_to_devnull():  # the Micro interpreter prints a line (in C++) for every arena too small
        return _smallest_arena(runtime, model_bytes, feeds, upper)


@contextlib.contextmanager
def _stderr_to_devnull():
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _smallest_arena(runtime, model_bytes, feeds, upper):
    def fits(size):
        try:
            interpreter = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=size)
            for position, value in feeds.items():
                interpreter.set_input(value, position)
            interpreter.invoke()
            return True
        except (ValueError, RuntimeError):
            return False

    if not fits(upper):
        raise ArtifactError(f"TFLite Micro cannot run the graph even in an arena of {upper} bytes")
    low, high = MIN_ARENA, upper
    while low < high:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle + 1
    return low
