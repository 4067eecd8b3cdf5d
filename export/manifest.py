"""manifest.json: what the export directory holds, how it was made, and its parity numbers (FORMAT.md)."""

import dataclasses
import datetime
import json
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Optional

from estella.build.fileio import write_json
from estella.build.model import rnn_layer_names, state_layout
from estella.build.model import state_size as model_state_size
from estella.runtime.manifest import MANIFEST, SCHEMA_VERSION, file_sha256
from estella.runtime.weights_format import GATES


def model_section(vocab, V, E, cell, units, dropout=0.0) -> dict:
    """Schema 2's model: the layers by their Keras names, the state size, each cell's settings, the fold."""
    G = GATES[cell]
    input_bias = "layer0_bias[0]" if cell == "gru" else "layer0_bias"
    return {
        "vocab": list(vocab.chars), "vocab_size": V, "embedding_dim": E,
        "cell": cell,
        "layers": [{"name": name, "cell": cell, "units": u} for name, u in zip(rnn_layer_names(cell, len(units)), units)],
        "state_size": model_state_size(cell, units),
        "dropout": dropout,  # training-time only: no step graph has dropout
        "cells": {cell: CELL_SETTINGS[cell]},
        # The step graphs gather one row of this table per character (export/stepgraph.py);
        # weights.npz keeps the unfolded arrays.
        "input_table": {"folded": True, "shape": [V, G * units[0]],
                        "value": f"embedding @ layer0_kernel + {input_bias}, computed in float64, stored float32",
                        "int8": {"tflite": "int8, per tensor (the converter quantizes the gather)",
                                 "onnx": "float32 (quantize_dynamic on MatMul only)"}},
    }


CELL_SETTINGS = {
    "gru": {"gate_order": ["z", "r", "h"], "reset_after": True, "activation": "tanh", "recurrent_activation": "sigmoid"},
    "lstm": {"gate_order": ["i", "f", "c", "o"], "activation": "tanh", "recurrent_activation": "sigmoid",
             "unit_forget_bias": True},
}


def state_section(cell, units) -> dict:
    S = model_state_size(cell, units)
    return {"name": "state", "shape": ["batch", S], "dtype": "float32", "initial": "zeros",
            "layout": state_layout(cell, units)}


# `estella export --precision`: every artifact, or the float ones alone (for a run whose int8 artifacts
# are not wanted or do not pass the parity gate; the gate itself is the same).
PRECISIONS = ("all", "float32")


@dataclass(frozen=True)
class ArtifactSpec:
    """One row of the export's artifact table (export/FORMAT.md); batch and time None where dynamic."""
    name: str
    format: str
    precision: str
    path: str
    batch: Optional[int] = None
    time: Optional[int] = None


def artifact_entry(export_dir, spec, V, S, role="step") -> dict:
    """One artifact: its step signature with fixed sizes or "batch"/"time", and every file's size and sha256."""
    b = spec.batch if spec.batch is not None else "batch"
    t = spec.time if spec.time is not None else "time"
    return {
        "name": spec.name, "format": spec.format, "precision": spec.precision, "role": role, "path": spec.path,
        "batch": spec.batch, "time": spec.time,
        "inputs": [{"name": "ids", "shape": [b, t], "dtype": "int32"},
                   {"name": "state", "shape": [b, S], "dtype": "float32"}],
        "outputs": [{"name": "logits", "shape": [b, t, V], "dtype": "float32"},
                    {"name": "new_state", "shape": [b, S], "dtype": "float32"}],
        "files": list_files(export_dir, spec.path),
    }


def list_files(export_dir, path) -> list:
    """Every file under `path` (a file or a folder such as saved_model/1), sorted, with bytes and sha256."""
    full = os.path.join(export_dir, path)
    if os.path.isfile(full):
        found = [path]
    else:
        found = sorted(os.path.relpath(os.path.join(folder, f), export_dir)
                       for folder, _, files in os.walk(full) for f in files)
    return [{"path": p.replace(os.sep, "/"), "bytes": os.path.getsize(os.path.join(export_dir, p)),
             "sha256": file_sha256(os.path.join(export_dir, p))} for p in found]


def provenance(run_dir, cfg, run_state, validation_text=None) -> dict:
    """validation_text: where the run's validation text lies in the corpus file (export/validation.py), or None."""
    best = (run_state or {}).get("best_val_loss")
    return {
        "run": os.path.abspath(run_dir),
        "preset": cfg.get("preset"),
        "hparams": dataclasses.asdict(cfg["hparams"]),
        "corpus_source": cfg["corpus"].get("source"),
        "corpus_sha256": cfg["corpus"].get("sha256"),
        "best_epoch": (run_state or {}).get("best_epoch"),
        "validation_loss": best,
        "validation_bpc": (run_state or {}).get("best_val_bpc"),
        "validation_text": validation_text,
        "versions": versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def versions() -> dict:
    import platform

    import numpy
    import tensorflow as tf

    out = {"python": platform.python_version(), "numpy": numpy.__version__, "tensorflow": tf.__version__}
    for dist in ("estella", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def write_manifest(export_dir, manifest):
    write_json(os.path.join(export_dir, MANIFEST), manifest)


def read_manifest_json(export_dir):
    """The manifest as plain JSON, without the runtime's checks (for deciding what an old export holds)."""
    with open(os.path.join(export_dir, MANIFEST), encoding="utf-8") as f:
        return json.load(f)


def new_manifest(vocab, arch, artifacts, provenance_section, dropout=0.0) -> dict:
    """arch: export.weights.architecture of the weights (cell, vocab_size, embedding_dim, units)."""
    cell, units = arch["cell"], arch["units"]
    return {"schema_version": SCHEMA_VERSION, "kind": "estella.char-rnn",
            "model": model_section(vocab, arch["vocab_size"], arch["embedding_dim"], cell, units, dropout),
            "state": state_section(cell, units), "artifacts": artifacts, "parity": None,
            "provenance": provenance_section}
