"""The GRU step in plain numpy from weights.npz: no dependency beyond numpy, and the readable reference.

It is Keras' GRU with reset_after=True (export/FORMAT.md). The embedding lookup and the input
projection are both linear in the one-hot id, so they fold into one table: row i of
embedding @ gru_kernel + gru_bias[0] is the input gates' pre-activation for character i.
"""

import io
import zipfile

import numpy as np

from .artifact_checks import check_finite
from .base import ArtifactError, Backend

# weights.npz: each array's shape in V (vocabulary), E (embedding), U (units); FORMAT.md.
ARRAYS = {"embedding": ("V", "E"), "gru_kernel": ("E", "3U"), "gru_recurrent_kernel": ("U", "3U"),
          "gru_bias": (2, "3U"), "dense_kernel": ("U", "V"), "dense_bias": ("V",)}


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self, export_dir, artifact, manifest, content=None, num_threads=None):
        pin_blas_threads(num_threads or 1)
        try:
            check_headers(artifact, content)
            with np.load(io.BytesIO(content), allow_pickle=False) as npz:
                w = {key: npz[key] for key in ARRAYS if key in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise ArtifactError(f"numpy cannot read artifact {artifact['name']!r} ({artifact['path']}): {e}") from None
        V, U = check_arrays(artifact, w)
        check_finite(artifact, w.items())
        self.input_table = w["embedding"] @ w["gru_kernel"] + w["gru_bias"][0]  # [V, 3U]
        self.recurrent_kernel = w["gru_recurrent_kernel"]  # [U, 3U]
        self.recurrent_bias = w["gru_bias"][1]  # [3U]
        self.dense_kernel, self.dense_bias = w["dense_kernel"], w["dense_bias"]  # [U, V], [V]
        self.precision = "float32"
        self.vocab_size, self.units = V, U

    def _step(self, ids, state):
        U = self.units
        h = state
        hs = []
        for t in range(ids.shape[1]):
            x = self.input_table[ids[:, t]]  # [B, 3U]: xz, xr, xh
            r_h = h @ self.recurrent_kernel + self.recurrent_bias  # [B, 3U]: hz, hr, hh
            gates = _sigmoid(x[:, :2 * U] + r_h[:, :2 * U])  # z and r in one pass: fewer numpy calls
            z, r = gates[:, :U], gates[:, U:]
            candidate = np.tanh(x[:, 2 * U:] + r * r_h[:, 2 * U:])
            h = z * h + (1 - z) * candidate
            hs.append(h)
        hs = hs[0][:, None] if len(hs) == 1 else np.stack(hs, axis=1)  # [B, T, U]; T=1 while decoding
        logits = hs @ self.dense_kernel + self.dense_bias  # [B, T, V]
        return logits.astype(np.float32, copy=False), h.astype(np.float32, copy=False)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def check_arrays(artifact, w):
    """Every array of FORMAT.md present, float32, with shapes that agree with each other; returns (V, U)."""
    def fail(why):
        raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}) is not estella weights: {why}; re-export it")

    missing = [k for k in ARRAYS if k not in w]
    if missing:
        fail(f"it has no array {missing[0]!r}")
    for key, dims in ARRAYS.items():
        if w[key].dtype != np.float32 or w[key].ndim != len(dims):
            fail(f"{key} is {w[key].dtype} of rank {w[key].ndim}, not float32 of rank {len(dims)}")
    V, E = w["embedding"].shape
    U = w["gru_recurrent_kernel"].shape[0]
    sizes = {"V": V, "E": E, "U": U, "3U": 3 * U}
    for key, dims in ARRAYS.items():
        want = tuple(sizes.get(d, d) for d in dims)
        if w[key].shape != want:
            fail(f"{key} has shape {list(w[key].shape)}, expected {list(want)} (V={V} E={E} U={U})")
    return int(V), int(U)


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
