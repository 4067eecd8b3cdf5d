"""Open one exported artifact as a Backend: open_backend(export_dir, backend, precision).

Every backend runs the same step (export/FORMAT.md); they differ in the interpreter they need.
"""

import importlib
import numbers
import os

from ..errors import EstellaError, MissingDependency
from ..manifest import check_manifest, load_manifest, verify_files
from .artifact_checks import check_one_step

# name -> (module, class, artifact format). Each module imports its interpreter only when opened.
BACKENDS = {
    "tflite": ("tflite", "TFLiteBackend", "tflite"),
    "onnx": ("onnx", "ONNXBackend", "onnx"),
    "numpy": ("numpy", "NumpyBackend", "numpy"),
    "savedmodel": ("savedmodel", "SavedModelBackend", "savedmodel"),
    # TensorFlow Lite Micro runs the same .tflite files, one stream at a time (the int8-full file is for it).
    "tflm": ("tflm", "TFLMBackend", "tflite"),
}
# `auto` tries these in order, fastest first at batch 1 (measured: see the runtime's README section);
# savedmodel is never picked by auto, numpy (always installed) is faster than TensorFlow per step.
AUTO_ORDER = ("tflite", "onnx", "numpy")
# int8: int8 weights, float activations (LiteRT, ONNX Runtime). int8-full: int8 weights and activations,
# for microcontrollers (FORMAT.md).
PRECISIONS = {"float32": "float32", "float": "float32", "int8": "int8", "int8-full": "int8-full"}


class BackendError(EstellaError):
    """An unknown backend or precision, or no artifact in the export for the one asked for."""


def open_backend(export_dir, backend="auto", precision="float32", manifest=None, num_threads=None):
    """Return a Backend for one artifact of the export; its files are verified against the manifest first,
    and the shapes the artifact itself declares must agree with the manifest's vocab_size and state_size.

    num_threads (at most the number of cores) goes to the interpreter; the numpy backend pins its BLAS
    to it (default one thread). A manifest passed in (the export's own check) is checked, not re-read.
    """
    if backend != "auto" and backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of float32 (or float), int8, int8-full")
    precision = PRECISIONS[precision]
    check_threads(num_threads)
    if manifest is None:
        manifest = load_manifest(export_dir, verify=False)  # only the files used are verified, below
    else:
        manifest = check_manifest(manifest)
    if backend != "auto":
        return _open(export_dir, manifest, backend, precision, num_threads)
    tried = []
    for name in AUTO_ORDER:
        if find_artifact(manifest, name, precision) is None:
            tried.append(f"{name}: no {precision} artifact")
            continue
        try:  # only a missing interpreter falls through: a tampered or broken artifact is refused
            return _open(export_dir, manifest, name, precision, num_threads)
        except MissingDependency as e:
            tried.append(f"{name}: {e}")
    raise BackendError(f"no backend can run the {precision} artifacts of {export_dir}: " + "; ".join(tried))


def check_threads(num_threads):
    """None (the backend's default) or 1 .. the number of cores: more threads than cores only slow a step down."""
    cores = os.cpu_count() or 1
    if num_threads is None:
        return
    if isinstance(num_threads, bool) or not isinstance(num_threads, numbers.Integral) or not 1 <= num_threads <= cores:
        raise BackendError(f"--threads must be an integer from 1 to {cores} (the number of CPU cores), got {num_threads!r}")


def backend_for(artifact) -> str:
    """The backend that runs an artifact: the first of its format, except that an int8-full file
    (made for microcontrollers) is run by TensorFlow Lite Micro, where it is meant to run."""
    if artifact["precision"] == "int8-full":
        return "tflm"
    return next(name for name, (_, _, fmt) in BACKENDS.items() if fmt == artifact["format"])


def find_artifact(manifest, backend, precision):
    if backend == "tflm" and precision != "int8-full":
        return None  # a microcontroller's arena is measured for the int8-full file only
    fmt = BACKENDS[backend][2]
    for artifact in manifest["artifacts"]:
        if (artifact["format"] == fmt and artifact["precision"] == precision
                and artifact.get("role", "step") == "step"):
            return artifact
    return None


def _open(export_dir, manifest, backend, precision, num_threads):
    artifact = find_artifact(manifest, backend, precision)
    if artifact is None:
        have = sorted({f"{a['format']} {a['precision']}" for a in manifest["artifacts"] if a.get("role", "step") == "step"})
        raise BackendError(f"{export_dir} has no {precision} artifact for the {backend} backend; "
                           f"it has: {', '.join(have)}")
    module_name, class_name, _ = BACKENDS[backend]
    cls = getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)
    cls.check_installed()  # a missing interpreter is named before any file is read
    # A single-file artifact is read once: the bytes that were hashed are the bytes the interpreter loads.
    # A folder artifact (a SavedModel) is passed as {path: bytes} of all its files.
    single = not os.path.isdir(os.path.join(export_dir, artifact["path"]))
    content = verify_files(export_dir, artifact, keep=[artifact["path"]] if single else [f["path"] for f in artifact["files"]])
    content = next(iter(content.values()), None) if single else content
    opened = cls(export_dir, artifact, manifest, content=content, num_threads=num_threads)
    check_shapes(opened, artifact, manifest)
    check_one_step(opened, artifact)
    return opened


def check_shapes(backend, artifact, manifest):
    """The artifact's own shapes (read by the backend from the graph or arrays) against the manifest."""
    model = manifest["model"]
    for what, have, want in (("vocabulary size", backend.vocab_size, model["vocab_size"]),
                             ("state size", backend.state_size, model["state_size"])):
        if have != want:
            raise BackendError(f"artifact {artifact['name']!r} ({artifact['path']}) has {what} {have} but the "
                               f"manifest says {want}: the artifact and manifest.json do not belong together; re-export")
