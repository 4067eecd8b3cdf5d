"""The ONNX step graphs (float32 and quantize_dynamic int8) through ONNX Runtime; the batch is dynamic."""

from ..errors import MissingDependency
from .base import ArtifactError, Backend, check_signature

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
        options = onnxruntime.SessionOptions()
        if num_threads:  # ORT's default, one thread per core, is the fastest on an idle machine
            options.intra_op_num_threads = num_threads
        options.log_severity_level = 3  # quantized graphs warn about things that do not matter here
        # The verified bytes themselves, never the path again. Loaded from bytes, a graph cannot name
        # external weight files next to it: everything it runs is in the file that was hashed.
        try:
            self.session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...), all for a bad file
            raise ArtifactError(f"ONNX Runtime cannot load artifact {artifact['name']!r} ({artifact['path']}): "
                                f"{str(e)[:300]}") from None
        specs = {t.name: ([n if isinstance(n, int) else None for n in t.shape], ONNX_DTYPES.get(t.type, t.type))
                 for t in self.session.get_inputs() + self.session.get_outputs()}
        self.vocab_size, self.units, self.max_batch, self.max_time = check_signature(artifact, specs)
        self.precision = artifact["precision"]
        self.output_names = ["logits", "new_state"]

    def _step(self, ids, state):
        return self.session.run(self.output_names, {"ids": ids, "state": state})
