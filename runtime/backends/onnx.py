"""The ONNX step graphs (float32 and quantize_dynamic int8) through ONNX Runtime; the batch is dynamic."""

import numpy as np

from ..errors import MissingDependency
from .artifact_checks import check_finite, check_precision
from .base import ArtifactError, Backend, check_signature
from .onnx_guard import check_onnx

ONNX_DTYPES = {"tensor(int32)": "int32", "tensor(float)": "float32"}


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependency("the onnx backend needs ONNX Runtime, which is not installed: "
                                "pip install 'estella[onnx]'") from None
    return onnxruntime


class ONNXBackend(Backend):
    name = "onnx"

    @classmethod
    def check_installed(cls):
        _onnxruntime()

    def __init__(self, export_dir, artifact, manifest, content=None, num_threads=None):
        onnxruntime = _onnxruntime()
        contents = check_onnx(artifact, content)  # before ONNX Runtime reads a byte of it
        check_finite(artifact, contents.float_tensors)
        check_precision(artifact, contents.quantized)
        options = onnxruntime.SessionOptions()
        if num_threads:  # ORT's default, one thread per core, is the fastest on an idle machine
            options.intra_op_num_threads = num_threads
        options.log_severity_level = 3  # quantized graphs warn about things that do not matter here
        # The verified bytes themselves, never the path again: everything it runs is in the file that was hashed.
        try:
            self.session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...), all for a bad file
            raise ArtifactError(f"ONNX Runtime cannot load artifact {artifact['name']!r} ({artifact['path']}): "
                                f"{str(e)[:300]}") from None
        specs = {t.name: ([n if isinstance(n, int) else None for n in t.shape], ONNX_DTYPES.get(t.type, t.type))
                 for t in self.session.get_inputs() + self.session.get_outputs()}
        self.vocab_size, self.state_size, self.max_batch, self.max_time = check_signature(artifact, specs)
        self.precision = artifact["precision"]
        self.output_names = ["logits", "new_state"]

    def _step(self, ids, state):
        return self.session.run(self.output_names, {"ids": ids, "state": state})

    def decoder(self, batch):
        return BoundStep(self.session, batch, self.state_size, self.vocab_size)


class BoundStep:
    """The decode loop's step through ONNX Runtime's IOBinding: ids, state, logits and new_state are
    bound once to arrays of ours, so a step is one run_with_iobinding call, with no input checks and
    no output arrays made per character: 4.5 us less per step than session.run (U=512, one thread).

    The state alternates between two buffers: a run reads one and writes the other, and returns it.
    The next call overwrites the logits it returned; the state, the call after.
    """

    def __init__(self, session, batch, state_size, vocab_size):
        self.session = session
        self.ids = np.zeros((batch, 1), np.int32)
        self.states = (np.zeros((batch, state_size), np.float32), np.zeros((batch, state_size), np.float32))
        self.logits = np.zeros((batch, 1, vocab_size), np.float32)
        self.bindings = (self._bind(self.states[0], self.states[1]), self._bind(self.states[1], self.states[0]))

    def _bind(self, state, new_state):
        binding = self.session.io_binding()
        for name, array in (("ids", self.ids), ("state", state)):
            binding.bind_input(name, "cpu", 0, array.dtype.type, array.shape, array.ctypes.data)
        for name, array in (("logits", self.logits), ("new_state", new_state)):
            binding.bind_output(name, "cpu", 0, array.dtype.type, array.shape, array.ctypes.data)
        return binding

    def __call__(self, ids, state):
        self.ids[...] = ids
        reads = 1 if state is self.states[1] else 0
        if state is not self.states[reads]:
            self.states[0][...] = state  # the first step: the state comes from outside the loop
        self.session.run_with_iobinding(self.bindings[reads])
        return self.logits, self.states[1 - reads]
