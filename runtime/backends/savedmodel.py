"""The SavedModel step through TensorFlow: only where TensorFlow happens to be installed.

TensorFlow is imported here, when this backend is opened, and nowhere else in the runtime.
"""

import os

from ..errors import MissingDependency
from .base import ArtifactError, Backend, check_signature


def _tensorflow():
    try:
        import tensorflow as tf
    except ImportError:
        raise MissingDependency("the savedmodel backend needs TensorFlow, which is not installed: "
                                "pip install 'estella[train]' (or use --backend tflite, onnx or numpy)") from None
    return tf


class SavedModelBackend(Backend):
    name = "savedmodel"

    @classmethod
    def check_installed(cls):
        _tensorflow()

    def __init__(self, export_dir, artifact, manifest, content=None, num_threads=None):
        tf = self.tf = _tensorflow()
        try:  # the folder's files were verified and it holds no others (manifest.check_artifact_paths)
            self.loaded = tf.saved_model.load(os.path.join(export_dir, artifact["path"]))
            self.function = self.loaded.signatures["serving_default"]
        except (OSError, ValueError, KeyError, RuntimeError, tf.errors.OpError) as e:
            raise ArtifactError(f"TensorFlow cannot load artifact {artifact['name']!r} ({artifact['path']}) "
                                f"with a serving_default signature: {str(e)[:300]}") from None
        inputs = self.function.structured_input_signature[1]
        outputs = self.function.structured_outputs
        specs = {name: (spec.shape.as_list() if spec.shape.rank is not None else None, spec.dtype.name)
                 for name, spec in {**inputs, **outputs}.items()}
        self.vocab_size, self.state_size, self.max_batch, self.max_time = check_signature(artifact, specs)
        self.precision = artifact["precision"]

    def _step(self, ids, state):
        out = self.function(ids=self.tf.constant(ids), state=self.tf.constant(state))
        return out["logits"].numpy(), out["new_state"].numpy()
