"""The step in plain numpy from weights.npz: no dependency beyond numpy, and the readable reference.

Every cell and depth of export/FORMAT.md: 1 to 4 layers of Keras' GRU (reset_after=True) or LSTM.
The embedding lookup and the first layer's input projection are both linear in the one-hot id, so
they fold into one table: row i of embedding @ layer0_kernel + input bias is the first layer's
input-gate pre-activation for character i. The state row is split and joined by the manifest's
state.layout (h for a GRU layer; h then c for an LSTM layer).
"""

import io
import zipfile

import numpy as np

from .. import weights_format
from .artifact_checks import check_finite
from .base import ArtifactError, Backend


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self, export_dir, artifact, manifest, content=None, num_threads=None):
        pin_blas_threads(num_threads or 1)

        def fail(why):
            raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}) is not estella weights: {why}; "
                                "re-export it")

        try:
            check_headers(artifact, content)
            with np.load(io.BytesIO(content), allow_pickle=False) as npz:
                w = weights_format.from_schema1({key: npz[key] for key in npz.files})
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise ArtifactError(f"numpy cannot read artifact {artifact['name']!r} ({artifact['path']}): {e}") from None
        try:
            arch = weights_format.architecture(w)
        except weights_format.WeightsFormatError as e:
            fail(str(e))
        check_finite(artifact, w.items())
        self.cell, units = arch["cell"], arch["units"]
        model = manifest["model"]
        declared = (model["cell"], [layer["units"] for layer in model["layers"]])
        if declared != (self.cell, units):
            fail(f"its arrays hold {len(units)} {self.cell} layers of {units} units, but the manifest says "
                 f"{len(declared[1])} {declared[0]} layers of {declared[1]}")
        # (layer, part) -> the slice of the state row it occupies; the manifest checked the layout.
        self.parts = {(p["layer"], p["part"]): slice(p["offset"], p["offset"] + p["size"])
                      for p in manifest["state"]["layout"]}
        self.layers = []
        for k in range(len(units)):
            kernel, recurrent_kernel, bias = (w[key] for key in weights_format.layer_keys(k))
            input_bias = bias[0] if self.cell == "gru" else bias
            layer = {"recurrent_kernel": recurrent_kernel,
                     "recurrent_bias": bias[1] if self.cell == "gru" else None, "units": units[k]}
            if k == 0:  # [V, G*U0]: embedding, input projection and input bias folded
                layer["input_table"] = w["embedding"] @ kernel + input_bias
            else:
                layer["kernel"], layer["input_bias"] = kernel, input_bias
            self.layers.append(layer)
        self.dense_kernel, self.dense_bias = w["dense_kernel"], w["dense_bias"]  # [U_last, V], [V]
        self.precision = "float32"
        self.vocab_size, self.state_size = arch["vocab_size"], int(model["state_size"])
        self._cell = _gru if self.cell == "gru" else _lstm

    def _step(self, ids, state):
        state = state.copy()
        outputs = []
        for t in range(ids.shape[1]):
            x = None
            for k, layer in enumerate(self.layers):
                gates = layer["input_table"][ids[:, t]] if k == 0 else x @ layer["kernel"] + layer["input_bias"]
                x = self._cell(layer, gates, state, self.parts, k)  # updates the layer's parts of `state`
            outputs.append(x)
        hs = outputs[0][:, None] if len(outputs) == 1 else np.stack(outputs, axis=1)  # [B, T, U_last]
        logits = hs @ self.dense_kernel + self.dense_bias  # [B, T, V]
        return logits.astype(np.float32, copy=False), state.astype(np.float32, copy=False)


def _gru(layer, x, state, parts, k):
    """Keras GRU(reset_after=True): x [B, 3U] the input gates (xz, xr, xh); h from the state row."""
    U, h_part = layer["units"], parts[(k, "h")]
    h = state[:, h_part]
    r_h = h @ layer["recurrent_kernel"] + layer["recurrent_bias"]  # [B, 3U]: hz, hr, hh
    gates = _sigmoid(x[:, :2 * U] + r_h[:, :2 * U])  # z and r in one pass: fewer numpy calls
    z, r = gates[:, :U], gates[:, U:]
    candidate = np.tanh(x[:, 2 * U:] + r * r_h[:, 2 * U:])
    h = z * h + (1 - z) * candidate
    state[:, h_part] = h
    return h


def _lstm(layer, x, state, parts, k):
    """Keras LSTM: x [B, 4U] the input gates with the bias (i, f, c, o); h and c from the state row."""
    U, h_part, c_part = layer["units"], parts[(k, "h")], parts[(k, "c")]
    z = x + state[:, h_part] @ layer["recurrent_kernel"]  # [B, 4U]
    i, f = _sigmoid(z[:, :U]), _sigmoid(z[:, U:2 * U])
    g, o = np.tanh(z[:, 2 * U:3 * U]), _sigmoid(z[:, 3 * U:])
    c = f * state[:, c_part] + i * g
    h = o * np.tanh(c)
    state[:, h_part], state[:, c_part] = h, c
    return h


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def check_headers(artifact, content):
    """Each array's header read before the array: one that declares more data than its zip member holds
    (a 4e9-row array in a few bytes), or a member that unpacks to more than the file's size, is refused
    before numpy allocates it."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for info in archive.infolist():
            if info.file_size > len(content):  # np.savez stores arrays uncompressed; this would be a zip bomb
                raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}): member {info.filename!r} "
                                    "unpacks to more bytes than the whole file holds; re-export it")
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(f)
            if int(np.prod(shape, dtype=object)) * dtype.itemsize > info.file_size:
                raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}): array {info.filename!r} "
                                    f"declares shape {list(shape)}, more data than the file holds; re-export it")


def pin_blas_threads(threads):
    """Limit numpy's BLAS (OpenBLAS, MKL, ...) to `threads` for this process. Its default, one thread
    per core, ran 58 times slower under load than one thread at batch 1: the matrix-vector product
    per character is too small to split. threadpoolctl is the maintained way to reach every BLAS
    that numpy may be linked against at run time (numpy itself only reads environment variables at import)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads, user_api="blas")
