"""`estella export`: build every artifact in a temp folder beside the target, check parity, then rename.

A failure at any point removes the temp folder and leaves the target as it was: no half export
is ever visible, and an old export is only replaced (with --force) once the new one has passed.
"""

import math
import os
import shutil
import tempfile

from estella.build import runlock
from estella.build.sample import load_reference
from estella.build.train import read_progress
from estella.runtime.manifest import MANIFEST

from . import manifest as manifest_mod
from .errors import ExportError
from .onnx import write_onnx, write_onnx_int8
from .parity import PRIME_STEPS, Reference, check_export, prime_ids
from .savedmodel import SAVED_MODEL_DIR, write_saved_model
from .tflite import write_tflite
from .weights import dims, save_weights_npz, weights_from_model

# name, format, precision, path, batch, time (None: dynamic) -- the table in FORMAT.md.
ARTIFACTS = (
    ("savedmodel-float32", "savedmodel", "float32", SAVED_MODEL_DIR, None, None),
    ("tflite-float32", "tflite", "float32", "model.tflite", 1, 1),
    ("tflite-int8", "tflite", "int8", "model.int8.tflite", 1, 1),
    ("onnx-float32", "onnx", "float32", "model.onnx", None, 1),
    ("onnx-int8", "onnx", "int8", "model.int8.onnx", None, 1),
    ("numpy-float32", "numpy", "float32", "weights.npz", None, None),
)


def default_out(run_dir):
    return os.path.join(run_dir, "export")


def export_run(run_dir, out_dir=None, force=False, prime_steps=PRIME_STEPS, log=print) -> dict:
    """Write the export folder for a run; return its manifest. Raises EstellaError for bad input."""
    out_dir = os.path.abspath(out_dir or default_out(run_dir))
    check_target(out_dir, force)
    with runlock.shared(run_dir):  # a trainer holds it exclusively: the run is never read mid-epoch
        progress = read_progress(run_dir)
        check_finite_best(run_dir, progress)
        step_model, vocab, cfg = load_reference(run_dir)
    weights = weights_from_model(step_model)
    V, E, U = dims(weights)
    if V != len(vocab) or cfg.get("vocab_size", V) != V:
        raise ExportError(f"{run_dir}: vocab.json has {len(vocab)} characters, config.json says "
                          f"{cfg.get('vocab_size')}, the weights have {V}: the run is inconsistent")

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-tmp-", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the export is an ordinary folder
    try:
        log(f"exporting {run_dir} (V={V} E={E} U={U}) into {out_dir}")
        save_weights_npz(os.path.join(tmp, "weights.npz"), weights)
        write_saved_model(weights, os.path.join(tmp, SAVED_MODEL_DIR))
        write_tflite(weights, os.path.join(tmp, "model.tflite"))
        write_tflite(weights, os.path.join(tmp, "model.int8.tflite"), int8=True)
        write_onnx(weights, os.path.join(tmp, "model.onnx"))
        write_onnx_int8(os.path.join(tmp, "model.onnx"), os.path.join(tmp, "model.int8.onnx"))

        artifacts = [manifest_mod.artifact_entry(tmp, *row, V=V, U=U) for row in ARTIFACTS]
        manifest = manifest_mod.new_manifest(vocab, V, E, U, artifacts,
                                             manifest_mod.provenance(run_dir, cfg, progress))
        manifest_mod.write_manifest(tmp, manifest)  # the runtime's loaders read it during the check

        log(f"checking parity against the Keras reference ({prime_steps} fed-back steps)")
        reference = Reference(step_model)
        prime, prime_source = prime_ids(reference, cfg, vocab, prime_steps)
        manifest["parity"] = check_export(tmp, manifest, reference, prime, prime_source)
        manifest_mod.write_manifest(tmp, manifest)
        replace_dir(tmp, out_dir, force)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    for artifact in manifest["artifacts"]:
        numbers = manifest["parity"]["artifacts"][artifact["name"]]
        size = sum(f["bytes"] for f in artifact["files"])
        log(f"  {artifact['name']:<19} {size / 1e6:8.2f} MB  " + summary(numbers))
    log(f"wrote {out_dir}")
    return manifest


def check_finite_best(run_dir, progress):
    best = (progress or {}).get("best_val_loss")
    if best is not None and not (isinstance(best, (int, float)) and math.isfinite(best)):
        raise ExportError(f"{run_dir}: its best validation loss is {best!r}, not a finite number, so its weights are "
                          "not a trained model; train the run again (with a lower --learning-rate)")


def summary(numbers) -> str:
    one, prime = numbers["one_step"], numbers["prime"]
    return (f"one step: dlogits {one['max_abs_logits']:.2e} dstate {one['max_abs_state']:.2e}; "
            f"{prime['steps']} steps: dlogits {prime['max_abs_logits']:.2e} dstate {prime['max_abs_state']:.2e} "
            f"top-1 {prime['top1_agreement']:.1%}")


def check_target(out_dir, force):
    """Refuse an existing target unless --force, and even then anything but an estella export of ours."""
    if not os.path.lexists(out_dir):
        return
    if not force:
        raise ExportError(f"{out_dir} already exists; pass --force to replace it, or choose another --out")
    if not os.path.isdir(out_dir) or os.path.islink(out_dir):
        raise ExportError(f"{out_dir} exists and is not a directory; --force only replaces an estella export")
    if not os.path.isfile(os.path.join(out_dir, MANIFEST)):
        raise ExportError(f"--force refuses to replace {out_dir}: it has no {MANIFEST}, so it is not an estella "
                          "export; move it or choose another --out")
    foreign = foreign_files(out_dir)
    if foreign:
        raise ExportError(f"--force refuses to replace {out_dir}: it holds files that the export did not write "
                          f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); move them or choose "
                          "another --out")


def foreign_files(out_dir) -> list:
    """Files in out_dir that its manifest does not list (all of them if the manifest is unreadable)."""
    present = sorted(os.path.relpath(os.path.join(folder, f), out_dir).replace(os.sep, "/")
                     for folder, _, files in os.walk(out_dir) for f in files)
    try:
        old = manifest_mod.read_manifest_json(out_dir)
        listed = {f["path"] for a in old["artifacts"] for f in a["files"]} | {MANIFEST}
    except (OSError, ValueError, KeyError, TypeError):
        return present
    return [p for p in present if p not in listed]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def replace_dir(new, target, force):
    """Rename `new` onto `target`; an old export (already checked by check_target) is moved aside first."""
    if os.path.lexists(target):
        check_target(target, force)  # again: it may have changed while we worked
        old = tempfile.mkdtemp(prefix=".export-old-", dir=os.path.dirname(target))
        os.rename(target, os.path.join(old, "export"))
        try:
            os.rename(new, target)
        except OSError:
            os.rename(os.path.join(old, "export"), target)
            raise
        shutil.rmtree(old)
    else:
        os.rename(new, target)
