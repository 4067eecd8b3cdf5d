"""`estella import SOURCE RUN_DIR --vocab VOCAB`: turn a model trained elsewhere into a run directory.

The run directory is what `estella train` leaves after its last epoch, less the per-epoch
checkpoints: config.json (the architecture, and the source under "import"), vocab.json,
best.weights.h5 (estella's Keras model holding the source's weights) and state.json. `estella
export`, `estella sample` and `estella train --init-from` read it like any run. It is written in a
temp folder and renamed, so a refused import leaves nothing behind.
"""

import dataclasses
import json
import os
import shutil
import tempfile

from . import config as config_mod
from . import runfolder
from .fileio import write_json
from .import_source import SourceError, read_source
from .runfolder import BEST, PROGRESS, sha256_file
from .vocab import Vocab


def read_vocab(path, vocab_size, source) -> Vocab:
    """--vocab: a JSON list of characters (or an estella vocab.json), or a text whose sorted(set(text))
    is the vocabulary, as the chapter builds it; it must have one character per embedding row."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SourceError(f"cannot read --vocab {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SourceError(f"--vocab {path} is not UTF-8 (byte {e.start})") from None
    if path.endswith(".json"):
        try:
            data = json.loads(text)
            vocab = Vocab(data["chars"] if isinstance(data, dict) else data)
        except (ValueError, KeyError, TypeError) as e:
            raise SourceError(f"--vocab {path} is not a JSON list of distinct single characters: {e}") from None
        kind = "JSON list"
    else:
        vocab, kind = Vocab.from_text(text), "sorted(set(text))"
    if len(vocab) != vocab_size:
        raise SourceError(f"--vocab {path} gives {len(vocab)} characters ({kind}), but the embedding of {source} "
                          f"has {vocab_size} rows: give the vocabulary (or the text) the model was trained with")
    return vocab


def import_model(source_path, run_dir, vocab_path, log=print) -> dict:
    """Write run_dir from the model at source_path; return its config. Refuses an existing non-empty run_dir."""
    run_dir = os.path.abspath(run_dir)
    if os.path.exists(run_dir) and (not os.path.isdir(run_dir) or os.listdir(run_dir)):
        raise SourceError(f"{run_dir} already exists and is not empty; import into a new run directory")
    source = read_source(source_path)
    vocab = read_vocab(vocab_path, source.vocab_size, source_path)
    parent = os.path.dirname(run_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".import-tmp-", dir=parent)
    except OSError as e:
        raise SourceError(f"cannot write the run directory {run_dir}: {e.strerror} ({e.filename or parent})") from None
    try:
        cfg = write_run(tmp, source, vocab, vocab_path)
        os.chmod(tmp, 0o755)
        os.rename(tmp, run_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    log(f"imported {source.path} ({source.format}: {source.cell.upper()} {source.units}, V={source.vocab_size} "
        f"E={source.embedding_dim}) into {run_dir}")
    return cfg


def write_run(run_dir, source, vocab, vocab_path) -> dict:
    from .model import build_model

    model = build_model(source.vocab_size, source.embedding_dim, source.units, cell=source.cell,
                        dropout=source.dropout)
    for name, arrays in source.weights.items():
        layer = model.get_layer(name)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [a.shape for a in arrays] != expected:
            raise SourceError(f"{source.path}: layer {name} has weights {[list(a.shape) for a in arrays]}, "
                              f"expected {[list(s) for s in expected]}")
        layer.set_weights(arrays)
    runfolder.claim(run_dir)
    best = os.path.join(run_dir, BEST)
    model.save_weights(best)
    digest = sha256_file(best)
    # The architecture as a trained run records it; the training settings are HParams' defaults
    # (a fine-tuned run takes its own from its preset and flags). "imported" names no preset, as
    # make_random_run's "random" does not: nothing trains this folder.
    hp = config_mod.HParams(embedding_dim=source.embedding_dim, units=list(source.units), cell=source.cell,
                            layers=len(source.units), dropout=source.dropout)
    hp.check_architecture()
    cfg = {"preset": "imported", "hparams": dataclasses.asdict(hp), "vocab_size": source.vocab_size,
           "corpus": {"source": None, "path": None, "sha256": None}, "mixed_precision": "off",
           "import": import_record(source, vocab_path), "versions": config_mod.versions()}
    write_json(os.path.join(run_dir, "config.json"), cfg)
    vocab.save(os.path.join(run_dir, "vocab.json"))
    # A finished run with no epoch of its own: export reads its best weights; `estella train` refuses
    # to train into it (see train.refuse_imported) and --init-from starts from it.
    write_json(os.path.join(run_dir, PROGRESS), {
        "epochs_done": 0, "best_val_loss": None, "history": [], "best_sha256": digest,
        "files_sha256": runfolder.start_hashes(run_dir),
        "imported": {"source": source.path, "format": source.format, "sha256": source.sha256}})
    return cfg


def import_record(source, vocab_path) -> dict:
    return {"source": source.path, "format": source.format, "sha256": source.sha256, "files": source.files,
            "keras_version": source.keras_version, "cell": source.cell, "units": list(source.units),
            "layers": source.layers, "vocab": os.path.abspath(vocab_path)}
