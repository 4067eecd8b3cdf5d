"""Training: Keras fit with Adam, a checkpoint per epoch, best weights, early stopping, resume.

Run directory (runs/<name>/):
    config.json                        every hyper-parameter, the corpus and its sha256, versions
    vocab.json                         the vocabulary
    checkpoints/epoch-003-val1.4321.weights.h5   one per epoch
    best.weights.h5                    the weights with the lowest validation loss so far
    last.keras                         model + optimizer after the last finished epoch (resume)
    state.json                         epochs done, best epoch and loss, the history
    history.csv, history.png           loss per epoch, training and validation
Every file is written to a temp name and renamed, so a killed run loses at most the current epoch.
"""

import csv
import io
import json
import math
import os
import shutil
import time

import keras

from . import config as config_mod
from . import distribute as distribute_mod
from . import precision
from .corpus import load as load_corpus
from .data import CharWindows, split, windows_needed
from .errors import RunError
from .fileio import atomic_path, write_atomic, write_json
from .memmap_data import DiskWindows, open_prepared
from .model import build_model
from .vocab import Vocab

NATS_TO_BITS = 1 / math.log(2)


def bits_per_char(loss_nats: float) -> float:
    return loss_nats * NATS_TO_BITS


class RunCheckpoint(keras.callbacks.Callback):
    """Per epoch: the epoch's weights, the best weights, the resumable model, history and plot.

    Keras' ModelCheckpoint and BackupAndRestore write in place (a kill mid-write leaves a
    broken file) and BackupAndRestore drops the optimizer state; this writes atomically.
    """

    def __init__(self, run_dir, state):
        super().__init__()
        self.run_dir, self.state = run_dir, state

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        val = float(logs["val_loss"])
        row = {"epoch": epoch + 1, "loss": float(logs["loss"]), "val_loss": val,
               "val_bpc": bits_per_char(val), "seconds": logs.get("seconds")}
        name = f"epoch-{epoch + 1:03d}-val{val:.4f}.weights.h5"
        checkpoint = os.path.join(self.run_dir, "checkpoints", name)
        with atomic_path(checkpoint) as tmp:
            self.model.save_weights(tmp)
        if self.state.get("best_val_loss") is None or val < self.state["best_val_loss"]:
            with atomic_path(os.path.join(self.run_dir, "best.weights.h5")) as tmp:
                shutil.copyfile(checkpoint, tmp)  # the same bytes: no second serialisation
            self.state.update(best_val_loss=val, best_val_bpc=bits_per_char(val), best_epoch=epoch + 1,
                              best_checkpoint=name)
        with atomic_path(os.path.join(self.run_dir, "last.keras")) as tmp:
            self.model.save(tmp)
        self.state["history"].append(row)
        self.state["epochs_done"] = epoch + 1
        # state.json last: it is what resume trusts, and everything it names is on disk by now.
        write_history(self.run_dir, self.state["history"])
        write_json(os.path.join(self.run_dir, "state.json"), self.state)


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["seconds"] = round(time.perf_counter() - self._t0, 2)


def write_history(run_dir, history):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["epoch", "loss", "val_loss", "val_bpc", "seconds"])
    writer.writeheader()
    writer.writerows(history)
    write_atomic(os.path.join(run_dir, "history.csv"), buf.getvalue().encode())
    plot_history(os.path.join(run_dir, "history.png"), history)


def plot_history(path, history):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [r["loss"] for r in history], "o-", label="training")
    ax.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (nats per character)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def clear_stale_temp_files(run_dir):
    """A killed run can leave the temp file of a write that never finished; it is never read."""
    for folder in (run_dir, os.path.join(run_dir, "checkpoints")):
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            if name.startswith(".tmp-"):
                os.unlink(os.path.join(folder, name))


def compile_model(model, hp):
    model.compile(optimizer=keras.optimizers.Adam(hp.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def new_state():
    """state.json of a run with no finished epoch."""
    return {"epochs_done": 0, "best_val_loss": None, "history": []}


def read_state(run_dir):
    path = os.path.join(run_dir, "state.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def train(run_dir, corpus_source, preset_name="default", cache_dir=None, verbose="auto", data_dir=None,
          mixed_precision=None, distribute="none", **overrides):
    """Train a run, or continue it from its last finished epoch. Returns the run's state dict.

    data_dir: a folder from `estella prepare`, read from disk instead of corpus_source.
    mixed_precision: auto|off|bfloat16|float16 (build/precision.py); None: off, or a resumed run's own.
    distribute: none|mirrored|multi-worker (build/distribute.py)."""
    dist = distribute_mod.setup(distribute)  # first: a multi-worker strategy must start before TensorFlow runs
    state = read_state(run_dir)
    resuming = state is not None and os.path.exists(os.path.join(run_dir, "last.keras"))
    if resuming:
        cfg = config_mod.load_config(run_dir)
        hp = cfg["hparams"]
        # Only the epoch count may change on resume; anything else would be another run.
        changed = {k: v for k, v in overrides.items() if v is not None and k != "epochs" and getattr(hp, k) != v}
        if changed:
            raise RunError(f"{run_dir} was trained with other settings; cannot change {sorted(changed)} on resume "
                           "(train a new run directory instead)")
        if overrides.get("epochs"):
            hp.epochs = overrides["epochs"]
            hp.check()
        saved_precision = cfg.get("mixed_precision", "off")
        if mixed_precision not in (None, saved_precision):
            raise RunError(f"{run_dir} was trained with --mixed-precision {saved_precision}; cannot change it to "
                           f"{mixed_precision} on resume")
        mixed_precision = saved_precision
    else:
        hp = config_mod.preset(preset_name, **overrides)
    mixed_precision = precision.resolve(mixed_precision or "off")

    if data_dir:
        prepared = open_prepared(data_dir)
        corpus_source, vocab, corpus_entry = data_dir, prepared.vocab, prepared.corpus_entry()
        train_ids, val_ids = prepared.train, prepared.val
    else:
        corpus = load_corpus(corpus_source, min_chars=4 * windows_needed(hp.seq_length, 1), cache_dir=cache_dir)
        vocab = Vocab.from_text(corpus.text)
        train_ids, val_ids = split(vocab.encode(corpus.text), hp.validation_fraction)
        corpus_entry = {"source": corpus.source, "path": corpus.path, "sha256": corpus.sha256,
                        "chars": len(corpus.text), "train_chars": len(train_ids), "validation_chars": len(val_ids)}
    if resuming:
        saved = Vocab.load(os.path.join(run_dir, "vocab.json"))
        if saved != vocab:
            extra, missing = sorted(set(vocab.chars) - set(saved.chars)), sorted(set(saved.chars) - set(vocab.chars))
            raise RunError(f"corpus {corpus_source} does not match the vocabulary of {run_dir} "
                           f"(new characters: {extra!r}, characters it lacks: {missing!r}); "
                           "train a new run for another corpus")
        if cfg["corpus"]["sha256"] != corpus_entry["sha256"]:
            print(f"warning: corpus {corpus_source} differs from the one {run_dir} started with "
                  "(same vocabulary, so training continues)")

    need = windows_needed(hp.seq_length, hp.batch_size)
    for part, ids, flag in (("training", train_ids, "--batch-size"), ("validation", val_ids, "--validation-fraction")):
        if len(ids) < need + hp.seq_length:
            raise RunError(f"the {part} text has {len(ids)} characters, fewer than one batch needs "
                           f"({need + hp.seq_length} at --seq-length {hp.seq_length}, --batch-size "
                           f"{hp.batch_size}): use a longer corpus or a smaller {flag} / --seq-length")
    keras.utils.set_random_seed(hp.seed)
    window_kind = DiskWindows if data_dir else CharWindows  # a prepared corpus stays on disk
    train_data = window_kind(train_ids, hp.seq_length, hp.batch_size, shuffle=True, seed=hp.seed,
                             steps_per_epoch=hp.steps_per_epoch, workers=1,
                             **({"epoch": state["epochs_done"]} if data_dir and resuming else {}))
    val_data = DiskWindows(val_ids, hp.seq_length, hp.batch_size, shuffle=False, steps_per_epoch=hp.validation_steps)

    if dist.is_chief:  # other workers of a multi-worker run write nothing
        os.makedirs(run_dir, exist_ok=True)
    with dist.scope(), precision.policy(mixed_precision):
        if resuming:
            if dist.is_chief:
                clear_stale_temp_files(run_dir)
            model = keras.models.load_model(os.path.join(run_dir, "last.keras"))
            initial_epoch = state["epochs_done"]
            print(f"resuming {run_dir} after epoch {initial_epoch} (best val_loss {state['best_val_loss']:.4f})")
        else:
            if dist.is_chief:
                config_mod.save_config(os.path.join(run_dir, "config.json"), preset_name, hp, len(vocab),
                                       corpus=corpus_entry, mixed_precision=mixed_precision)
                vocab.save(os.path.join(run_dir, "vocab.json"))
            model = build_model(len(vocab), hp.embedding_dim, hp.units)
            compile_model(model, hp)
            state = new_state()
            initial_epoch = 0
    if initial_epoch >= hp.epochs:
        print(f"{run_dir} already has {initial_epoch} epochs (--epochs {hp.epochs}); nothing to do")
        return state

    print(f"training {run_dir}: V={len(vocab)} E={hp.embedding_dim} U={hp.units} "
          f"params={model.count_params():,} train={len(train_ids):,} chars val={len(val_ids):,} chars "
          f"steps/epoch={len(train_data)} backend={keras.backend.backend()} precision={mixed_precision} "
          f"distribute={dist.describe()}", flush=True)
    callbacks = [EpochTimer(),
                 # Halve the step size when validation stalls: cheaper than stopping early.
                 keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1,
                                                   min_lr=hp.learning_rate / 16, verbose=1),
                 RunCheckpoint(dist.checkpoint_dir(run_dir), state),
                 keras.callbacks.EarlyStopping(monitor="val_loss", patience=hp.patience)]
    try:
        with dist.fitting(model):
            model.fit(train_data, validation_data=val_data, epochs=hp.epochs, initial_epoch=initial_epoch,
                      callbacks=callbacks, verbose=verbose)
    finally:
        dist.close()
    if not dist.is_chief:
        return state
    print(f"best: epoch {state['best_epoch']}, val_loss {state['best_val_loss']:.4f} nats "
          f"= {state['best_val_bpc']:.3f} bits/char -> {os.path.join(run_dir, 'best.weights.h5')}")
    return state
