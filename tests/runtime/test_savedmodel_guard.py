"""A SavedModel is a program: one that would read or write a file when loaded or run is refused before
TensorFlow sees it, even when the manifest's hashes match (a malicious export is self-consistent).
Each malicious model is a real SavedModel written by TensorFlow."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest

from estella.runtime.backends import open_backend
from estella.runtime.backends.base import ArtifactError
from estella.runtime.cli import main

pytestmark = pytest.mark.tensorflow


@pytest.fixture
def real_copy(real_export, tmp_path):
    return str(shutil.copytree(real_export, tmp_path / "real"))


def replace_saved_model(export_dir, write):
    """Write a new SavedModel into the export's saved_model/1 with `write(path)`, and list its files
    with their sizes and hashes in the manifest, as a malicious exporter would."""
    folder = os.path.join(export_dir, "saved_model", "1")
    shutil.rmtree(folder)
    write(folder)
    manifest_path = os.path.join(export_dir, "manifest.json")
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    artifact = next(a for a in manifest["artifacts"] if a["format"] == "savedmodel")
    files = []
    for base, _, names in os.walk(folder):
        for name in sorted(names):
            path = os.path.join(base, name)
            data = open(path, "rb").read()
            files.append({"path": os.path.relpath(path, export_dir), "bytes": len(data),
                          "sha256": hashlib.sha256(data).hexdigest()})
    artifact["files"] = files
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return manifest


def dims(export_dir):
    with open(os.path.join(export_dir, "manifest.json"), encoding="utf-8") as f:
        model = json.load(f)["model"]
    return model["vocab_size"], model["state_size"]


def refused_everywhere(export_dir, capsys):
    with pytest.raises(ArtifactError, match="refused before TensorFlow loads it"):
        open_backend(export_dir, "savedmodel")
    for argv in (["inspect", export_dir], ["generate", export_dir, "--backend", "savedmodel", "--chars", "3"],
                 ["evaluate", export_dir, "--all", "--text", os.path.join(export_dir, "manifest.json"),
                  "--skip-unknown"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and "refused before TensorFlow loads it" in err and "Traceback" not in err, (argv, err)


def test_a_tf1_main_op_that_writes_a_file_never_runs(real_copy, tmp_path, capsys):
    import tensorflow as tf

    V, U = dims(real_copy)
    marker = tmp_path / "pwned.txt"

    def write(path):
        with tf.Graph().as_default(), tf.compat.v1.Session() as session:
            ids = tf.compat.v1.placeholder(tf.int32, [None, None], name="ids")
            state = tf.compat.v1.placeholder(tf.float32, [None, U], name="state")
            logits = tf.zeros(tf.concat([tf.shape(ids), [V]], 0))
            main_op = tf.io.write_file(str(marker), "written by a SavedModel's main_op")
            signature = tf.compat.v1.saved_model.predict_signature_def(
                {"ids": ids, "state": state}, {"logits": logits, "new_state": tf.identity(state)})
            builder = tf.compat.v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={"serving_default": signature},
                                                 main_op=main_op)
            builder.save()

    replace_saved_model(real_copy, write)
    refused_everywhere(real_copy, capsys)
    assert not marker.exists()


def test_a_tf2_function_that_reads_a_file_never_runs(real_copy, tmp_path, capsys):
    import tensorflow as tf

    V, U = dims(real_copy)
    secret, marker = tmp_path / "secret.txt", tmp_path / "copied.txt"
    secret.write_text("s3cret")

    class Step(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(np.zeros((U, V), np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="ids"),
                                      tf.TensorSpec([None, U], tf.float32, name="state")])
        def step(self, ids, state):
            stolen = tf.io.read_file(str(secret))
            with tf.control_dependencies([tf.io.write_file(str(marker), stolen)]):
                logits = tf.einsum("bu,uv->bv", state, self.kernel)[:, None, :] + tf.zeros_like(
                    tf.cast(ids, tf.float32))[:, :, None]
            return {"logits": logits, "new_state": tf.identity(state)}

    def write(path):
        module = Step()
        tf.saved_model.save(module, path, signatures={"serving_default": module.step})

    replace_saved_model(real_copy, write)
    refused_everywhere(real_copy, capsys)
    assert not marker.exists()


def test_a_resource_whose_initializer_writes_a_file_at_load(real_copy, tmp_path, capsys):
    """TensorFlow 2 runs a restored resource's initializer while it loads: refused from the object graph."""
    import tensorflow as tf

    V, U = dims(real_copy)
    marker = tmp_path / "at-load.txt"

    class Resource(tf.saved_model.experimental.TrackableResource):
        def _create_resource(self):
            return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name="")

        def _initialize(self):
            tf.io.write_file(str(marker), "written while loading")

    class Step(tf.Module):
        def __init__(self):
            super().__init__()
            self.resource = Resource()

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="ids"),
                                      tf.TensorSpec([None, U], tf.float32, name="state")])
        def step(self, ids, state):
            logits = tf.zeros(tf.concat([tf.shape(ids), [V]], 0))
            return {"logits": logits, "new_state": tf.identity(state)}

    def write(path):
        module = Step()
        tf.saved_model.save(module, path, signatures={"serving_default": module.step})

    replace_saved_model(real_copy, write)
    marker.unlink(missing_ok=True)  # saving ran the initializer once, in this process
    refused_everywhere(real_copy, capsys)
    assert not marker.exists()


def test_the_real_export_passes_the_guard(real_export):
    backend = open_backend(real_export, "savedmodel")
    logits, state = backend.step(np.zeros((1, 2), np.int32), backend.initial_state(1))
    assert np.isfinite(logits).all() and state.shape == (1, backend.state_size)
