"""Read a model someone else trained: a Keras 3 `.keras` file, a Keras 2 `.h5` file, or a TensorFlow
checkpoint written by Keras 2 (tf-keras), as the chapter's ModelCheckpoint(save_weights_only=True)
leaves it. The result is one description (`Source`): the cell, the layers' sizes and every weight
array in Keras' get_weights() order, plus what was refused and why.

Files carry their layers' configuration, so every setting is checked. A checkpoint carries only
variables, named by the object graph (`layer_with_weights-K/...`): the architecture is read from
their names and shapes, and the settings a checkpoint cannot record (activations) are the Keras
defaults the chapter's code uses.
"""

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .errors import RunError
from .model import MAX_LAYERS
from .runfolder import sha256_file

RECURRENT = {"GRU": "gru", "LSTM": "lstm"}
ATTENTION = ("Attention", "AdditiveAttention", "MultiHeadAttention", "GroupedQueryAttention")


class SourceError(RunError):
    """The source cannot be imported; the message names the layer and the setting."""


@dataclass
class Source:
    path: str  # the file, or the checkpoint prefix
    format: str  # "keras" | "h5" | "checkpoint"
    files: list  # [{"path", "bytes", "sha256"}] of every file read
    sha256: str  # of the one file, or of the checkpoint's files together (see files_sha256)
    cell: str
    units: list
    embedding_dim: int
    vocab_size: int
    dropout: float
    layers: list  # [{"name", "class", ...settings}] as the source names them, in order
    weights: dict = field(repr=False)  # estella layer name -> [arrays] in Keras get_weights() order
    keras_version: str = None  # as the file records it (None for a checkpoint)
    config: dict = field(default=None, repr=False)  # the file's model config (None for a checkpoint)


def read_source(path) -> Source:
    """The model at `path`, checked against what estella runs; raises SourceError naming what is refused."""
    if os.path.isdir(path) or not os.path.exists(path):
        return read_checkpoint(path)
    if zipfile.is_zipfile(path):
        return read_keras(path)
    if _is_hdf5(path):
        return read_h5(path)
    if path.endswith(".index"):
        return read_checkpoint(path[:-len(".index")])
    raise SourceError(f"{path} is neither a .keras file, an .h5 file nor a TensorFlow checkpoint "
                       "(a folder with a `checkpoint` file, or the prefix before .index)")


# ---- .keras (Keras 3) and .h5 (Keras 2 or 3): the config says what each layer is


def read_keras(path) -> Source:
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            meta = json.loads(z.read("metadata.json")) if "metadata.json" in z.namelist() else {}
    except (KeyError, ValueError, zipfile.BadZipFile, OSError) as e:
        raise SourceError(f"{path} is not a readable .keras file: {e}") from None
    layers = model_layers(config, path)
    arch = check_layers(layers, path)
    import keras

    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many kinds for a file it cannot rebuild
        raise SourceError(f"Keras cannot load {path}: {e}") from None
    weights = {est: [np.asarray(w, np.float32) for w in model.get_layer(src).get_weights()]
               for est, src in arch["names"].items()}
    return _source(path, "keras", [_file_entry(path)], arch, weights, meta.get("keras_version"), config)


def read_h5(path) -> Source:
    """A whole model saved as HDF5 (`model.save("x.h5")`): the config from its attributes, the weights
    read with h5py by the names Keras wrote (Keras 3 cannot rebuild a Keras 2 GRU: `time_major`)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs:
                raise SourceError(f"{path} holds weights only (no model_config): save the whole model with "
                                   "model.save(), or import the checkpoint it came from")
            config = json.loads(_text(f.attrs["model_config"]))
            version = _text(f.attrs.get("keras_version", "")) or None
            layers = model_layers(config, path)
            arch = check_layers(layers, path)
            group = f["model_weights"] if "model_weights" in f else f
            weights = {est: _h5_layer_weights(group, src, path) for est, src in arch["names"].items()}
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e}") from None
    return _source(path, "h5", [_file_entry(path)], arch, weights, version, config)


def _h5_layer_weights(group, name, path):
    if name not in group:
        raise SourceError(f"{path} has no weights for layer {name!r}")
    layer = group[name]
    names = [_text(n) for n in layer.attrs.get("weight_names", [])]
    return [np.asarray(layer[n], np.float32) for n in names]


def model_layers(config, path) -> list:
    """[{"class_name", "config", "inbound"}] of a Sequential or functional model, in order; "inbound" (the
    layer names a functional layer takes) is None in a Sequential. check_chain checks them."""
    kind = config.get("class_name")
    inner = config.get("config", {})
    if kind not in ("Sequential", "Functional", "Model"):
        raise SourceError(f"{path}: the model is a {kind}; estella imports a Sequential or functional model")
    functional = kind != "Sequential"
    return [{**_plain_layer(layer), "inbound": _inbound_names(layer.get("inbound_nodes", [])) if functional else None}
            for layer in inner.get("layers", [])]


def check_chain(layers, path):
    """Each layer of a functional model takes the one before it, and only that."""
    previous = None
    for layer in layers:
        inbound = layer.get("inbound")
        if inbound is not None and layer["class_name"] != "InputLayer" and inbound != [previous]:
            raise SourceError(f"{path}: layer {layer['config'].get('name')!r} takes {inbound or 'no input'}; "
                              "estella imports a chain of layers (Embedding -> GRU/LSTM ... -> Dense), each "
                              "taking the one before")
        previous = layer["config"].get("name")


def _plain_layer(layer):
    return {"class_name": layer.get("class_name"), "config": layer.get("config", {})}


def _inbound_names(nodes) -> list:
    """The layer names a functional layer's inputs come from (Keras 2 lists and Keras 3 dicts)."""
    found = []

    def walk(x):
        if isinstance(x, dict):
            history = x.get("config", {}).get("keras_history") if x.get("class_name") == "__keras_tensor__" else None
            if history:
                found.append(history[0])
                return
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            if len(x) >= 3 and isinstance(x[0], str) and isinstance(x[1], int):  # Keras 2: [name, node, tensor, kw]
                found.append(x[0])
                return
            for v in x:
                walk(v)

    walk(nodes)
    return found


def check_layers(layers, path) -> dict:
    """Embedding -> 1..4 GRU or LSTM (one kind) -> Dense, Dropout anywhere; every setting estella's
    step graphs implement. Returns the architecture and estella name -> source layer name."""
    from .model import rnn_layer_names

    described, kinds, dropout = [], [], 0.0
    embedding = dense = None
    rnn = []
    for layer in layers:
        cls, cfg = layer["class_name"], layer["config"]
        name = cfg.get("name", cls)
        where = f"{path}: layer {name!r} ({cls})"
        if cls == "InputLayer":
            continue
        if cls == "Dropout":
            dropout = max(dropout, float(cfg.get("rate", 0.0)))
            described.append({"name": name, "class": cls, "rate": cfg.get("rate")})
            continue
        if cls == "Bidirectional":
            raise SourceError(f"{where}: Bidirectional layers read the text backwards too, which a generator "
                               "cannot do one character at a time; estella imports one-directional GRU and LSTM layers")
        if cls in ATTENTION or "attention" in cls.lower():
            raise SourceError(f"{where}: attention is not supported; estella imports Embedding -> GRU/LSTM -> Dense")
        if cls == "Embedding":
            if embedding or rnn or dense:
                raise SourceError(f"{where}: the embedding must be the first layer, and the only one")
            if cfg.get("mask_zero"):
                raise SourceError(f"{where}: mask_zero=True (id 0 skipped) is not supported; it must be False")
            embedding = name
            described.append({"name": name, "class": cls, "input_dim": cfg.get("input_dim"),
                              "output_dim": cfg.get("output_dim")})
        elif cls in RECURRENT:
            if not embedding or dense:
                raise SourceError(f"{where}: a recurrent layer must come after the embedding and before the dense layer")
            _check_rnn(cls, cfg, where)
            kinds.append(RECURRENT[cls])
            rnn.append(name)
            described.append({"name": name, "class": cls, "units": cfg.get("units"),
                              "stateful": bool(cfg.get("stateful", False)), "activation": cfg.get("activation"),
                              "recurrent_activation": cfg.get("recurrent_activation"),
                              **({"reset_after": cfg.get("reset_after", True)} if cls == "GRU" else {})})
        elif cls == "Dense":
            if not rnn or dense:
                raise SourceError(f"{where}: the dense layer must be the last layer, after the recurrent ones")
            activation = cfg.get("activation", "linear")
            if activation not in ("linear", None):
                raise SourceError(f"{where}: activation={activation!r}; estella's models output logits, so the "
                                   "last Dense layer must have activation=None (linear)")
            if not cfg.get("use_bias", True):
                raise SourceError(f"{where}: use_bias=False is not supported; it must be True")
            dense = name
            described.append({"name": name, "class": cls, "units": cfg.get("units")})
        else:
            raise SourceError(f"{where}: estella imports Embedding, GRU, LSTM, Dropout and Dense layers only")
    _check_shape(path, embedding, rnn, dense, kinds)
    check_chain(layers, path)
    cell = kinds[0]
    return {"cell": cell, "layers": described, "dropout": dropout,
            "names": dict(zip(["embedding", *rnn_layer_names(cell, len(rnn)), "logits"], [embedding, *rnn, dense]))}


def _check_rnn(cls, cfg, where):
    wanted = {"activation": "tanh", "recurrent_activation": "sigmoid", "use_bias": True, "go_backwards": False,
              "return_sequences": True, "time_major": False}
    if cls == "GRU":
        wanted["reset_after"] = True
    for key, value in wanted.items():
        got = cfg.get(key, value)
        if got != value:
            why = {"reset_after": " (estella's graphs implement the cuDNN-compatible GRU, reset gate after the matmul)",
                   "activation": " (the cuDNN activations are the ones estella's graphs implement)",
                   "recurrent_activation": " (the cuDNN activations are the ones estella's graphs implement)",
                   "return_sequences": " (each step's output feeds the next layer)"}.get(key, "")
            raise SourceError(f"{where}: {key}={got!r} is not supported; it must be {value!r}{why}")


def _check_shape(path, embedding, rnn, dense, kinds):
    if not embedding:
        raise SourceError(f"{path}: no Embedding layer; estella imports Embedding -> GRU/LSTM -> Dense")
    if not rnn:
        raise SourceError(f"{path}: no GRU or LSTM layer; estella imports Embedding -> GRU/LSTM -> Dense")
    if not dense:
        raise SourceError(f"{path}: no Dense layer after the recurrent ones; estella imports Embedding -> GRU/LSTM -> Dense")
    if len(set(kinds)) > 1:
        raise SourceError(f"{path}: layers {rnn} mix GRU and LSTM; estella runs stacks of one cell kind")
    if len(rnn) > MAX_LAYERS:
        raise SourceError(f"{path}: {len(rnn)} recurrent layers; estella runs 1 to {MAX_LAYERS}")


# ---- TensorFlow checkpoints of tf-keras models: variables only, named by the object graph


def checkpoint_prefix(path) -> str:
    """A folder -> its latest checkpoint (tf.train.latest_checkpoint's rule); a prefix as given."""
    import tensorflow as tf

    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            indexes = sorted(n for n in os.listdir(path) if n.endswith(".index"))
            hint = (f"; it has {', '.join(indexes[:5])}: pass one prefix, e.g. {os.path.join(path, indexes[-1][:-6])}"
                    if indexes else "")
            raise SourceError(f"no checkpoint in {path}: it has no `checkpoint` file naming a checkpoint whose "
                               f".index file is there{hint}")
        return prefix
    if not os.path.exists(path + ".index"):
        raise SourceError(f"{path} does not exist, and {path}.index does not either: give a .keras or .h5 file, "
                           "a checkpoint folder or a checkpoint prefix")
    return path


def read_checkpoint(path) -> Source:
    import tensorflow as tf

    prefix = checkpoint_prefix(path)
    files = checkpoint_files(prefix)
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        values = {k: reader.get_tensor(k) for k in shapes if k.startswith("layer_with_weights-")}
    except Exception as e:  # the reader raises OpError, IndexError ("Read less bytes") or ValueError by damage
        raise SourceError(f"cannot read checkpoint {prefix}: it is incomplete or damaged "
                           f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
    layers = {}
    for key, value in values.items():
        head, _, rest = key.partition("/")
        layers.setdefault(int(head.split("-")[1]), {})[rest.replace("/.ATTRIBUTES/VARIABLE_VALUE", "")] = value
    arch = _checkpoint_arch(prefix, [layers[k] for k in sorted(layers)])
    return _source(prefix, "checkpoint", files, arch, arch.pop("weights"), None, None)


def _checkpoint_arch(prefix, layers) -> dict:
    from .model import rnn_layer_names

    if not layers:
        raise SourceError(f"checkpoint {prefix} holds no layer variables (layer_with_weights-K/...): it is not "
                           "a checkpoint of a Keras model")
    where = lambda k: f"checkpoint {prefix}: layer_with_weights-{k}"  # noqa: E731
    first, last, middle = layers[0], layers[-1], layers[1:-1]
    if set(first) != {"embeddings"}:
        raise SourceError(f"{where(0)} holds {sorted(first)}, not an Embedding's `embeddings`; estella imports "
                           "Embedding -> GRU/LSTM -> Dense")
    if set(last) != {"kernel", "bias"} or len(layers) < 3:
        raise SourceError(f"{where(len(layers) - 1)} holds {sorted(last)}: the checkpoint is not Embedding -> "
                           "GRU/LSTM -> Dense (the last layer must be a Dense with kernel and bias)")
    V, E = first["embeddings"].shape
    cells, units, weights, described = [], [], [], [{"name": "layer_with_weights-0", "class": "Embedding",
                                                     "input_dim": int(V), "output_dim": int(E)}]
    width = E
    for k, layer in enumerate(middle, start=1):
        if any(name.startswith(("forward_layer", "backward_layer")) for name in layer):
            raise SourceError(f"{where(k)} is Bidirectional (forward_layer/backward_layer); estella imports "
                               "one-directional GRU and LSTM layers")
        if set(layer) != {"cell/kernel", "cell/recurrent_kernel", "cell/bias"}:
            raise SourceError(f"{where(k)} holds {sorted(layer)}, not a GRU or LSTM cell (cell/kernel, "
                               "cell/recurrent_kernel, cell/bias)")
        kernel, recurrent, bias = layer["cell/kernel"], layer["cell/recurrent_kernel"], layer["cell/bias"]
        U = recurrent.shape[0]
        gates = recurrent.shape[1] // U if U else 0
        cell = {3: "gru", 4: "lstm"}.get(gates) if recurrent.shape[1] == gates * U else None
        if cell is None:
            raise SourceError(f"{where(k)}: recurrent_kernel {list(recurrent.shape)} is neither a GRU's [U, 3U] "
                               "nor an LSTM's [U, 4U]")
        if kernel.shape != (width, gates * U):
            raise SourceError(f"{where(k)}: kernel {list(kernel.shape)} does not take the previous layer's "
                               f"{width} features (expected {[int(width), gates * U]})")
        if cell == "gru" and bias.shape == (3 * U,):
            raise SourceError(f"{where(k)}: a GRU with reset_after=False (bias [3U]) is not supported; estella's "
                               "graphs implement reset_after=True (the cuDNN-compatible GRU, bias [2, 3U])")
        expected_bias = (2, 3 * U) if cell == "gru" else (4 * U,)
        if bias.shape != expected_bias:
            raise SourceError(f"{where(k)}: bias {list(bias.shape)} is not a {cell.upper()}'s {list(expected_bias)}")
        cells.append(cell)
        units.append(int(U))
        weights.append([kernel, recurrent, bias])
        described.append({"name": f"layer_with_weights-{k}", "class": cell.upper(), "units": int(U),
                          "activation": "tanh (assumed: a checkpoint does not record it)",
                          "recurrent_activation": "sigmoid (assumed)", **({"reset_after": True} if cell == "gru" else {})})
        width = U
    if len(set(cells)) > 1:
        raise SourceError(f"checkpoint {prefix} mixes GRU and LSTM layers; estella runs stacks of one cell kind")
    if not 1 <= len(cells) <= MAX_LAYERS:
        raise SourceError(f"checkpoint {prefix} has {len(cells)} recurrent layers; estella runs 1 to {MAX_LAYERS}")
    if last["kernel"].shape != (width, V) or last["bias"].shape != (V,):
        raise SourceError(f"{where(len(layers) - 1)}: Dense kernel {list(last['kernel'].shape)} and bias "
                           f"{list(last['bias'].shape)} do not map {width} features to the embedding's {V} characters")
    described.append({"name": f"layer_with_weights-{len(layers) - 1}", "class": "Dense", "units": int(V)})
    names = ["embedding", *rnn_layer_names(cells[0], len(cells)), "logits"]
    all_weights = [[first["embeddings"]], *weights, [last["kernel"], last["bias"]]]
    return {"cell": cells[0], "layers": described, "dropout": 0.0, "names": dict(zip(names, names)),
            "weights": {n: [np.asarray(w, np.float32) for w in ws] for n, ws in zip(names, all_weights)}}


def checkpoint_files(prefix) -> list:
    """The prefix's .index and data shards; a shard the index promises but the folder lacks is an error."""
    folder, base = os.path.split(prefix)
    folder = folder or "."
    data = sorted(n for n in os.listdir(folder) if n.startswith(base + ".data-"))
    expected = int(data[0].rsplit("-of-", 1)[1]) if data else 1
    if len(data) != expected:
        raise SourceError(f"checkpoint {prefix} is incomplete: {len(data)} of {expected} data files "
                           f"({base}.data-*-of-{expected:05d}) are there")
    return [_file_entry(os.path.join(folder, n)) for n in [base + ".index", *data]]


# ---- shared


def _source(path, fmt, files, arch, weights, keras_version, config) -> Source:
    V, E = weights["embedding"][0].shape
    units = [int(w[1].shape[0]) for name, w in weights.items() if name not in ("embedding", "logits")]
    digest = files[0]["sha256"] if len(files) == 1 else files_sha256(files)
    return Source(path=os.path.abspath(path), format=fmt, files=files, sha256=digest, cell=arch["cell"], units=units,
                  embedding_dim=int(E), vocab_size=int(V), dropout=arch["dropout"], layers=arch["layers"],
                  weights=weights, keras_version=keras_version, config=config)


def files_sha256(files) -> str:
    """One digest for several files: sha256 over "name sha256\\n" lines, in order."""
    lines = "".join(f"{os.path.basename(f['path'])} {f['sha256']}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def _file_entry(path) -> dict:
    return {"path": os.path.abspath(path), "bytes": os.path.getsize(path), "sha256": sha256_file(path)}


def _is_hdf5(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)

