"""The parity reference of an imported run: the source model loaded by its own library.

`estella export` checks every artifact against this rather than against estella's rebuild, so an
import that misread a weight or a setting fails the gate. The library loads the file itself
(Keras 3 for a .keras file or an .h5 that Keras 3 wrote; tf-keras for an .h5 of Keras 2 and for
a checkpoint, whose tf-keras model is rebuilt from the recorded layers and restored by tf-keras'
own load_weights). The loaded layers are then wired into a step function in the same library, with
their own configuration: each recurrent layer made stateless and returning its state, which is fed
in and out explicitly in the layout of the state row (contract: GRU h; LSTM h then c; layer order).
"""

import importlib.util
import os

import numpy as np

from .import_source import files_sha256
from .runfolder import sha256_file


class ReferenceUnavailable(Exception):
    """The source cannot serve as the reference (moved, changed, or its library is not installed)."""


def source_step(record):
    """(step(ids, state) -> (logits, new_state) as numpy, state_size, description) for an import record."""
    check_unchanged(record)
    fmt, path = record["format"], record["source"]
    if fmt == "keras":
        lib = _keras3()
        model = lib.saving.load_model(path, compile=False, safe_mode=True)
    elif fmt == "h5" and str(record.get("keras_version") or "").startswith("2."):
        lib = _tf_keras()
        model = lib.models.load_model(path, compile=False)
    elif fmt == "h5":
        lib = _keras3()
        model = lib.saving.load_model(path, compile=False)
    elif fmt == "checkpoint":
        lib = _tf_keras()
        model = checkpoint_model(lib, record)
    else:
        raise ReferenceUnavailable(f"unknown source format {fmt!r}")
    step, size = step_function(lib, model)
    library = "tf-keras" if lib.__name__ == "tf_keras" else "keras"
    return step, size, {"kind": "source", "library": f"{library} {lib.__version__}", "source": path, "format": fmt,
                        "sha256": record["sha256"]}


def check_unchanged(record):
    files = record.get("files") or []
    if not files or not all(os.path.isfile(f["path"]) for f in files):
        raise ReferenceUnavailable(f"the source {record['source']} is no longer there")
    current = [{**f, "sha256": sha256_file(f["path"])} for f in files]
    digest = current[0]["sha256"] if len(current) == 1 else files_sha256(current)
    if digest != record["sha256"]:
        raise ReferenceUnavailable(f"the source {record['source']} changed since it was imported (sha256 {digest[:12]}, "
                                   f"imported {record['sha256'][:12]})")


def checkpoint_model(lib, record):
    """The chapter's Sequential in tf-keras, sized by the recorded layers, restored from the checkpoint by
    tf-keras (its object graph: layer_with_weights-K), every model variable matched."""
    layers = record["layers"]
    V, E = layers[0]["input_dim"], layers[0]["output_dim"]
    cells = {"GRU": lib.layers.GRU, "LSTM": lib.layers.LSTM}
    model = lib.Sequential([lib.layers.Embedding(V, E)]
                           + [cells[layer["class"]](layer["units"], return_sequences=True) for layer in layers[1:-1]]
                           + [lib.layers.Dense(V)])
    model.build((None, None))
    status = model.load_weights(record["source"])
    status.expect_partial()  # the optimizer's slots are not wanted
    status.assert_existing_objects_matched()
    return model


def step_function(lib, model):
    """The loaded model's layers, rewired as (ids [B, T], state [B, S]) -> (logits, new_state [B, S])."""
    import tensorflow as tf

    layers = [layer for layer in model.layers if type(layer).__name__ not in ("InputLayer", "Dropout")]
    recurrent = [layer for layer in layers if type(layer).__name__ in ("GRU", "LSTM")]
    parts = [(layer.units, 2 if type(layer).__name__ == "LSTM" else 1) for layer in recurrent]
    size = sum(units * n for units, n in parts)
    ids = lib.Input(shape=(None,), dtype="int32", name="ids")
    state = lib.Input(shape=(size,), dtype="float32", name="state")
    x, offset, new_parts = ids, 0, []
    for layer in layers:
        config = layer.get_config()
        for key in ("batch_input_shape", "batch_shape", "input_length"):
            config.pop(key, None)
        if layer in recurrent:
            config.update(stateful=False, return_sequences=True, return_state=True)
            fresh = type(layer).from_config(config)
            units, n = parts[recurrent.index(layer)]
            initial = [state[:, offset + i * units:offset + (i + 1) * units] for i in range(n)]
            offset += units * n
            x, *layer_state = fresh(x, initial_state=initial)
            new_parts.extend(layer_state)
        else:
            fresh = type(layer).from_config(config)
            x = fresh(x)
        fresh.set_weights(layer.get_weights())
    new_state = new_parts[0] if len(new_parts) == 1 else lib.layers.Concatenate(axis=-1)(new_parts)
    step_model = lib.Model([ids, state], [x, new_state])
    call = tf.function(lambda i, s: step_model([i, s], training=False), input_signature=[
        tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, size], tf.float32)])

    def step(ids, state):
        logits, new = call(ids, state)
        return np.asarray(logits, np.float32), np.asarray(new, np.float32)

    return step, size


def _keras3():
    import keras

    return keras


def _tf_keras():
    if importlib.util.find_spec("tf_keras") is None:
        raise ReferenceUnavailable("tf-keras, the library that wrote it, is not installed (pip install 'tf-keras>=2.21,<2.22')")
    import tf_keras

    return tf_keras
