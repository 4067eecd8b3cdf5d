"""The SavedModel step through TensorFlow: only where TensorFlow happens to be installed.

TensorFlow is imported here, when this backend is opened, and nowhere else in the runtime.
The folder's verified bytes are written to a private temporary folder, checked there
(savedmodel_guard: the graph before TensorFlow loads it, the variables for finite values), and
TensorFlow loads that copy: nothing it reads can have changed since it was hashed.
"""

import os
import shutil
import tempfile

import numpy as np

from ..errors import MissingDependency
from ..quiet import library_logs_filtered
from .base import ArtifactError, Backend, check_signature
from .savedmodel_guard import check_files, check_saved_model


def _tensorflow():
    try:
        with library_logs_filtered():  # absl's oneDNN and CPU-feature lines
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
        files = {os.path.relpath(path, artifact["path"]).replace(os.sep, "/"): data
                 for path, data in (content or {}).items()}
        check_files(artifact, files)
        check_saved_model(artifact, files["saved_model.pb"])
        copy = tempfile.mkdtemp(prefix="estella-savedmodel-")
        try:
            for name, data in files.items():
                os.makedirs(os.path.dirname(os.path.join(copy, name)), exist_ok=True)
                with open(os.path.join(copy, name), "wb") as f:
                    f.write(data)
            check_finite_variables(tf, artifact, copy)
            with library_logs_filtered():
                self.loaded = tf.saved_model.load(copy)
            self.function = self.loaded.signatures["serving_default"]
        except (OSError, ValueError, KeyError, RuntimeError, tf.errors.OpError) as e:
            raise ArtifactError(f"TensorFlow cannot load artifact {artifact['name']!r} ({artifact['path']}) "
                                f"with a serving_default signature: {str(e)[:300]}") from None
        finally:  # TensorFlow holds the variables in memory once loaded
            shutil.rmtree(copy, ignore_errors=True)
        inputs = self.function.structured_input_signature[1]
        outputs = self.function.structured_outputs
        specs = {name: (spec.shape.as_list() if spec.shape.rank is not None else None, spec.dtype.name)
                 for name, spec in {**inputs, **outputs}.items()}
        self.vocab_size, self.state_size, self.max_batch, self.max_time = check_signature(artifact, specs)
        self.precision = artifact["precision"]
        self._ran = False

    def _step(self, ids, state):
        if not self._ran:  # TensorFlow's first run of the graph logs its oneDNN notice from C++
            self._ran = True
            with library_logs_filtered():
                return self._call(ids, state)
        return self._call(ids, state)

    def _call(self, ids, state):
        out = self.function(ids=self.tf.constant(ids), state=self.tf.constant(state))
        return out["logits"].numpy(), out["new_state"].numpy()


def check_finite_variables(tf, artifact, folder):
    """Every float variable of the checkpoint finite: NaN weights would write only newlines."""
    prefix = os.path.join(folder, "variables", "variables")
    if not os.path.exists(prefix + ".index"):
        return
    reader = tf.train.load_checkpoint(prefix)
    for name, dtype in reader.get_variable_to_dtype_map().items():
        if dtype.is_floating and not np.isfinite(reader.get_tensor(name)).all():
            raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}) has NaN or infinite weights "
                                f"(variable {name!r}): it is not a trained model; re-export a run that trained")
