"""`estella export`: build every artifact in a temp folder beside the target, check parity, then rename.

A failure at any point removes the temp folder and leaves the target as it was: no half export
is ever visible, and an old export is only replaced (with --force) once the new one has passed.
The temp folder (.export-tmp-PID-*) holds a file named INCOMPLETE until just before the rename and
gets its manifest.json last, so a folder left by a killed export is never loadable; the next export
into the same parent removes such folders once their process is gone (export/folders.py).
"""

import math
import os
import shutil

import numpy as np

from estella.build import runfolder, runlock
from estella.build.fileio import describe_os_error, is_no_space
from estella.build.sample import load_reference
from estella.build.train import read_progress
from estella.runtime.backends.tflm import micro_runtime
from estella.runtime.errors import EstellaError

from . import manifest as manifest_mod
from .errors import ExportError
from .folders import INCOMPLETE, check_target, default_out, check_writable, make_temp_dir, reached, replace_dir
from .manifest import PRECISIONS, ArtifactSpec
from .onnx import write_onnx, write_onnx_int8
from .parity import PRIME_STEPS, KerasReference, bpc_section, check_export, prime_ids, sampled_ids
from .savedmodel import SAVED_MODEL_DIR, write_saved_model
from .tflite import write_tflite
from .micro import CALIBRATION_FALLBACK_CHARS, write_tflite_int8_full
from .validation import training_ids, validation_text
from .weights import architecture, save_weights_npz, weights_from_model

# The table in FORMAT.md; batch and time left out where the artifact takes any.
ARTIFACTS = (
    ArtifactSpec("savedmodel-float32", "savedmodel", "float32", SAVED_MODEL_DIR),
    ArtifactSpec("tflite-float32", "tflite", "float32", "model.tflite", batch=1, time=1),
    ArtifactSpec("tflite-int8", "tflite", "int8", "model.int8.tflite", batch=1, time=1),
    ArtifactSpec("onnx-float32", "onnx", "float32", "model.onnx", time=1),
    ArtifactSpec("onnx-int8", "onnx", "int8", "model.int8.onnx", time=1),
    ArtifactSpec("numpy-float32", "numpy", "float32", "weights.npz"),
    ArtifactSpec("tflite-int8-full", "tflite", "int8-full", "model.int8-full.tflite", batch=1, time=1),
)
# The file for microcontrollers is optional: it needs the [micro] extra, and a model whose full-integer
# step fails its gate (often an untrained one) is exported without it rather than not at all.
MICRO_ARTIFACT, MICRO_PATH = "tflite-int8-full", "model.int8-full.tflite"


def export_run(run_dir, out_dir=None, force=False, prime_steps=PRIME_STEPS, log=print, precision="all") -> dict:
    """Write the export folder for a run; return its manifest. Raises EstellaError for bad input."""
    if precision not in PRECISIONS:
        raise ExportError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    specs = [spec for spec in ARTIFACTS if precision == "all" or spec.precision == precision]
    out_dir = os.path.abspath(out_dir or default_out(run_dir))
    check_target(out_dir, force)
    check_writable(out_dir)  # before the model loads, which takes a while
    with runlock.shared(run_dir):  # a trainer holds it exclusively: the run is never read mid-epoch
        progress = read_progress(run_dir)
        check_finite_best(run_dir, progress)
        runfolder.verify_run_files(run_dir, progress)  # the weights and vocabulary that state.json vouches for
        step_model, vocab, cfg = load_reference(run_dir)
    weights = weights_from_model(step_model)
    check_finite_weights(run_dir, weights)
    arch = architecture(weights)
    V, E, units = arch["vocab_size"], arch["embedding_dim"], arch["units"]
    S = int(step_model.inputs[1].shape[-1])
    if V != len(vocab) or cfg.get("vocab_size", V) != V:
        raise ExportError(f"{run_dir}: vocab.json has {len(vocab)} characters, config.json says "
                          f"{cfg.get('vocab_size')}, the weights have {V}: the run is inconsistent")

    tmp = make_temp_dir(out_dir)
    try:
        log(f"exporting {run_dir} (V={V} E={E} {arch['cell']} units={units} state={S}) into {out_dir}")
        save_weights_npz(os.path.join(tmp, "weights.npz"), weights)
        write_saved_model(weights, os.path.join(tmp, SAVED_MODEL_DIR))
        write_tflite(weights, os.path.join(tmp, "model.tflite"))
        write_onnx(weights, os.path.join(tmp, "model.onnx"))
        arenas = {}
        if precision == "all":
            write_tflite(weights, os.path.join(tmp, "model.int8.tflite"), int8=True)
            write_onnx_int8(os.path.join(tmp, "model.onnx"), os.path.join(tmp, "model.int8.onnx"))
            arenas = write_micro(weights, tmp, cfg, vocab, step_model, log)
        reached("artifacts-written")

        artifacts = [dict(manifest_mod.artifact_entry(tmp, spec, V=V, S=S), **arenas.get(spec.path, {}))
                     for spec in specs if spec.path not in arenas or arenas[spec.path]]
        val_ids, val_named = validation_text(cfg, vocab)
        manifest = manifest_mod.new_manifest(vocab, arch, artifacts,
                                             manifest_mod.provenance(run_dir, cfg, progress, val_named),
                                             dropout=cfg["hparams"].dropout)

        log(f"checking parity against the Keras reference ({prime_steps} fed-back steps)")
        reference = KerasReference(step_model, vocab.chars)
        prime, prime_source = prime_ids(reference, val_ids, cfg["corpus"].get("path"), prime_steps)
        manifest["parity"] = check_export(tmp, manifest, reference, prime, prime_source, optional=(MICRO_ARTIFACT,))
        leave_out(tmp, manifest, manifest["parity"]["left_out"], log)
        if val_ids is not None:
            log(f"measuring bits per character on {len(val_ids)} characters of the validation text")
        manifest["parity"]["bpc"] = bpc_section(tmp, manifest, val_ids, f"validation text of {cfg['corpus'].get('path')}")
        manifest_mod.write_manifest(tmp, manifest)  # last: a folder without it is not an export
        os.remove(os.path.join(tmp, INCOMPLETE))
        replace_dir(tmp, out_dir, force)
    except Exception as e:  # TensorFlow, h5py and ONNX report a full disk in their own exception types
        if is_no_space(e):
            raise ExportError(f"cannot write --out {out_dir}: {describe_os_error(e, tmp)}; nothing was "
                              "replaced: free some space and export again") from None
        raise
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    bpc = (manifest["parity"]["bpc"] or {}).get("artifacts", {})
    for artifact in manifest["artifacts"]:
        numbers = manifest["parity"]["artifacts"][artifact["name"]]
        size = sum(f["bytes"] for f in artifact["files"])
        log(f"  {artifact['name']:<19} {size / 1e6:8.2f} MB  " + summary(numbers, bpc.get(artifact["name"])))
    log(f"wrote {out_dir}")
    return manifest


def check_finite_weights(run_dir, weights):
    """NaN or infinite weights are not a model: every artifact would write only newlines."""
    bad = [name for name, array in weights.items() if not np.isfinite(array).all()]
    if bad:
        raise ExportError(f"{run_dir}: its best weights hold NaN or infinite values ({', '.join(bad)}); nothing was "
                          "written. Train the run again (with a lower --learning-rate)")


def write_micro(weights, tmp, cfg, vocab, step_model, log) -> dict:
    """The int8-full file for TFLite Micro, calibrated on the run's training text (or, for a run
    without its corpus, on text the model samples itself). {path: {"arena_bytes": n}}, or
    {path: None} where it cannot be made (TFLite Micro not installed, the [micro] extra; or the model
    lowers to ops Micro cannot run): the file is then left out, and the export says why."""
    path = MICRO_PATH
    try:
        micro_runtime()
        ids = training_ids(cfg, vocab)
        if ids is None:
            ids = sampled_ids(KerasReference(step_model), CALIBRATION_FALLBACK_CHARS)
        arena = write_tflite_int8_full(weights, os.path.join(tmp, path), ids)
    except EstellaError as e:
        log(f"not writing {path} (TensorFlow Lite Micro): {e}")
        if os.path.exists(os.path.join(tmp, path)):
            os.remove(os.path.join(tmp, path))
        return {path: None}
    return {path: {"arena_bytes": arena}}


def leave_out(tmp, manifest, left_out, log):
    """Drop the optional artifacts that failed the gate: their files and manifest entries."""
    for artifact in [a for a in manifest["artifacts"] if a["name"] in left_out]:
        log(f"leaving {artifact['path']} out of the export: the gate's {artifact['precision']} rule does not "
            f"hold: {left_out[artifact['name']]}")
        for entry in artifact["files"]:
            os.remove(os.path.join(tmp, entry["path"]))
        manifest["artifacts"].remove(artifact)


def check_finite_best(run_dir, progress):
    best = (progress or {}).get("best_val_loss")
    if best is not None and not (isinstance(best, (int, float)) and math.isfinite(best)):
        raise ExportError(f"{run_dir}: its best validation loss is {best!r}, not a finite number, so its weights are "
                          "not a trained model; train the run again (with a lower --learning-rate)")


def summary(numbers, bpc=None) -> str:
    one_logits = max(numbers["zero_dlogits"], numbers["random_dlogits"])
    one_state = max(numbers["zero_dstate"], numbers["random_dstate"])
    return (f"one step: dlogits {one_logits:.2e} dstate {one_state:.2e}; "
            f"{numbers['steps']} steps: dlogits {numbers['text_dlogits']:.2e} dstate {numbers['text_dstate']:.2e} "
            f"top-1 {numbers['top1']:.1%}" + (f"; {bpc:.4f} bpc" if bpc is not None else ""))
