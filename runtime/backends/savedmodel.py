"""The SavedModel step through TensorFlow: only where TensorFlow happens to be installed.

TensorFlow is imported here, when this backend is opened, and nowhere else in the runtime.
"""

import os

from ..errors import MissingDependency
from .base import Backend


class SavedModelBackend(Backend):
    name = "savedmodel"

    def __init__(self, export_dir, artifact, manifest):
        try:
            import tensorflow as tf
        except ImportError:
            raise MissingDependency("the savedmodel backend needs TensorFlow, which is not installed: "
                                    "pip install 'estella[train]' (or use --backend tflite, onnx or numpy)") from None
        self.tf = tf
        self.loaded = tf.saved_model.load(os.path.join(export_dir, artifact["path"]))
        self.function = self.loaded.signatures["serving_default"]
        self.precision = artifact["precision"]
        self.vocab_size = int(manifest["model"]["vocab_size"])
        self.units = int(manifest["model"]["units"])

    def _step(self, ids, state):
        out = self.function(ids=self.tf.constant(ids), state=self.tf.constant(state))
        return out["logits"].numpy(), out["new_state"].numpy()
