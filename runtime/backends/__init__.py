"""Open one exported artifact as a Backend: open_backend(export_dir, backend, precision).

Every backend runs the same step (export/FORMAT.md); they differ in the interpreter they need.
"""

import importlib

from ..errors import EstellaError, MissingDependency
from ..manifest import load_manifest, verify_files

# name -> (module, class, artifact format). Each module imports its interpreter only when opened.
BACKENDS = {
    "tflite": ("tflite", "TFLiteBackend", "tflite"),
    "onnx": ("onnx", "ONNXBackend", "onnx"),
    "numpy": ("numpy", "NumpyBackend", "numpy"),
    "savedmodel": ("savedmodel", "SavedModelBackend", "savedmodel"),
}
# `auto` tries these in order, fastest first at batch 1 (measured: see the runtime's README section);
# savedmodel is never picked by auto, numpy (always installed) is faster than TensorFlow per step.
AUTO_ORDER = ("tflite", "onnx", "numpy")
PRECISIONS = {"float32": "float32", "float": "float32", "int8": "int8"}


class BackendError(EstellaError):
    """An unknown backend or precision, or no artifact in the export for the one asked for."""


def open_backend(export_dir, backend="auto", precision="float32", manifest=None, **options):
    """Return a Backend for one artifact of the export; its files are verified against the manifest first.

    options (num_threads=N) go to the tflite and onnx interpreters.
    """
    if backend != "auto" and backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of auto, {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of float32 (or float), int8")
    precision = PRECISIONS[precision]
    if manifest is None:
        manifest = load_manifest(export_dir, verify=False)  # only the files used are verified, below
    if backend != "auto":
        return _open(export_dir, manifest, backend, precision, options)
    tried = []
    for name in AUTO_ORDER:
        if find_artifact(manifest, name, precision) is None:
            tried.append(f"{name}: no {precision} artifact")
            continue
        try:
            return _open(export_dir, manifest, name, precision, options)
        except MissingDependency as e:
            tried.append(f"{name}: {e}")
    raise BackendError(f"no backend can run the {precision} artifacts of {export_dir}: " + "; ".join(tried))


def find_artifact(manifest, backend, precision):
    fmt = BACKENDS[backend][2]
    for artifact in manifest["artifacts"]:
        if (artifact["format"] == fmt and artifact["precision"] == precision
                and artifact.get("role", "step") == "step"):
            return artifact
    return None


def _open(export_dir, manifest, backend, precision, options):
    artifact = find_artifact(manifest, backend, precision)
    if artifact is None:
        have = sorted({f"{a['format']} {a['precision']}" for a in manifest["artifacts"] if a.get("role", "step") == "step"})
        raise BackendError(f"{export_dir} has no {precision} artifact for the {backend} backend; "
                           f"it has: {', '.join(have)}")
    verify_files(export_dir, artifact)
    module_name, class_name, _ = BACKENDS[backend]
    cls = getattr(importlib.import_module(f"{__name__}.{module_name}"), class_name)
    if backend in ("tflite", "onnx"):
        return cls(export_dir, artifact, manifest, **options)
    return cls(export_dir, artifact, manifest)
