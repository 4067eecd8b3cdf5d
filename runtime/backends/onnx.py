"""The ONNX step graphs (float32 and quantize_dynamic int8) through ONNX Runtime; the batch is dynamic."""

import os

from ..errors import MissingDependency
from .base import Backend


class ONNXBackend(Backend):
    name = "onnx"

    def __init__(self, export_dir, artifact, manifest, num_threads=None):
        try:
            import onnxruntime
        except ImportError:
            raise MissingDependency("the onnx backend needs ONNX Runtime, which is not installed: "
                                    "pip install 'estella[onnx]'") from None
        options = onnxruntime.SessionOptions()
        if num_threads:  # ORT's default, one thread per core, is the fastest on an idle machine
            options.intra_op_num_threads = num_threads
        options.log_severity_level = 3  # quantized graphs warn about things that do not matter here
        self.session = onnxruntime.InferenceSession(os.path.join(export_dir, artifact["path"]), options,
                                                    providers=["CPUExecutionProvider"])
        shapes = {t.name: t.shape for t in self.session.get_inputs() + self.session.get_outputs()}
        self.precision = artifact["precision"]
        self.vocab_size, self.units = int(shapes["logits"][-1]), int(shapes["state"][-1])
        self.max_batch, self.max_time = (n if isinstance(n, int) else None for n in shapes["ids"])
        self.output_names = ["logits", "new_state"]

    def _step(self, ids, state):
        return self.session.run(self.output_names, {"ids": ids, "state": state})
