"""Training: Keras fit with Adam, a checkpoint per epoch, best weights, early stopping, exact resume.

Run directory (runs/<name>/):
    config.json                        every hyper-parameter, the corpus and its sha256, versions
    vocab.json                         the vocabulary
    checkpoints/epoch-003-val1.4321.weights.h5   weights and optimizer after each epoch
    best.weights.h5                    a copy of the checkpoint with the lowest validation loss
    state.json                         the run's progress: epochs done, best, what resume needs, history
    history.csv, history.png           loss per epoch, training and validation
    .lock                              held by the one trainer (see runlock.py)
Every file is written to a temp name and renamed, so a killed run loses at most the current epoch.
state.json is written last each epoch: it is the one commit point, naming the checkpoint to resume from.
"""

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import shutil
import time

import keras
import numpy as np

from . import config as config_mod
from . import distribute as distribute_mod
from . import precision
from . import runlock
from .corpus import load as load_corpus
from .data import CharWindows, split, windows_needed
from .errors import RunError
from .fileio import atomic_path, write_atomic, write_json
from .memmap_data import DiskWindows, open_prepared
from .model import build_model
from .vocab import Vocab

NATS_TO_BITS = 1 / math.log(2)
PROGRESS = "state.json"
CHECKPOINTS = "checkpoints"
# What a resumed run needs from Keras' callbacks: fit() resets them in on_train_begin.
CARRIED = {"reduce_lr": ("wait", "best", "cooldown_counter"),
           "early_stopping": ("wait", "best", "best_epoch", "stopped_epoch")}


def bits_per_char(loss_nats: float) -> float:
    return loss_nats * NATS_TO_BITS


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunCheckpoint(keras.callbacks.Callback):
    """Per epoch: the epoch's checkpoint, the best weights, history and plot, then state.json.

    Why not Keras' own: ModelCheckpoint writes in place, so a kill mid-write leaves a truncated
    file under the final name; BackupAndRestore writes its weights and its epoch counter as two
    files in place (a kill between them pairs one epoch's weights with another's counter) and
    carries neither the data order nor the other callbacks' state; CSVLogger appends in place, so
    an epoch redone after a kill is logged twice. Here each file goes to a temp name and is renamed,
    and state.json, written last, names the checkpoint (weights + optimizer: Keras' save_weights
    includes the optimizer) that resume loads, with its sha256. It also carries the state of
    ReduceLROnPlateau and EarlyStopping (`carried`), restored in on_train_begin, so it must come
    after them in the callback list.

    An epoch whose loss is not finite (TerminateOnNaN stopped it) is not written: the last good
    epoch stays the run's last and best, and `diverged` tells train() to fail.
    """

    def __init__(self, run_dir, progress, carried):
        super().__init__()
        self.run_dir, self.progress, self.carried = run_dir, progress, carried
        self.diverged = None

    def on_train_begin(self, logs=None):
        for name, callback in self.carried.items():
            for attr, value in self.progress.get("callbacks", {}).get(name, {}).items():
                setattr(callback, attr, value)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        loss, val = float(logs.get("loss", math.nan)), float(logs.get("val_loss", math.nan))
        if not (math.isfinite(loss) and math.isfinite(val)):
            self.diverged = {"epoch": epoch + 1, "loss": loss, "val_loss": val}
            self.model.stop_training = True
            return
        progress = self.progress
        name = f"epoch-{epoch + 1:03d}-val{val:.4f}.weights.h5"
        checkpoint = os.path.join(self.run_dir, CHECKPOINTS, name)
        with atomic_path(checkpoint) as tmp:
            self.model.save_weights(tmp)
        digest = sha256_file(checkpoint)
        if progress.get("best_val_loss") is None or val < progress["best_val_loss"]:
            with atomic_path(os.path.join(self.run_dir, "best.weights.h5")) as tmp:
                shutil.copyfile(checkpoint, tmp)  # the same bytes: no second serialisation
            progress.update(best_val_loss=val, best_val_bpc=bits_per_char(val), best_epoch=epoch + 1,
                            best_checkpoint=name, best_sha256=digest)
        optimizer = self.model.optimizer
        progress.update(
            epochs_done=epoch + 1, last_checkpoint=name, last_sha256=digest,
            iterations=int(keras.ops.convert_to_numpy(optimizer.iterations)),
            learning_rate=float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
            callbacks={key: {attr: _plain(getattr(cb, attr)) for attr in CARRIED[key]}
                       for key, cb in self.carried.items()})
        progress["history"].append({"epoch": epoch + 1, "loss": loss, "val_loss": val, "val_bpc": bits_per_char(val),
                                    "learning_rate": logs.get("learning_rate"), "seconds": logs.get("seconds"),
                                    "checkpoint": name, "sha256": digest})
        write_history(self.run_dir, progress["history"])
        write_json(os.path.join(self.run_dir, PROGRESS), progress)  # last: the commit point


def _plain(value):
    """Callback attributes are numpy or Python numbers (or None); JSON wants Python ones."""
    if value is None or isinstance(value, (bool, int)):
        return value
    return float(value)


class EpochStart(keras.callbacks.Callback):
    """At each epoch's start the data order and the dropout masks are set from (seed, epoch) alone, so
    a run resumed at an epoch sees what the straight run saw there. Keras' checkpoints keep neither:
    a Dropout layer's random state is not in its weights."""

    def __init__(self, train_data, seed):
        super().__init__()
        self.train_data, self.seed = train_data, seed

    def on_epoch_begin(self, epoch, logs=None):
        self.train_data.set_epoch(epoch)
        dropouts = [layer for layer in self.model.layers if isinstance(layer, keras.layers.Dropout)]
        for k, layer in enumerate(dropouts):
            # [key, counter]: each mask drawn adds 1 to the counter; the key is the epoch's and the layer's own.
            key = np.random.SeedSequence([self.seed, epoch, k]).generate_state(1)[0] % 2**31
            state = layer.seed_generator.state
            state.assign(np.array([key, 0], dtype=state.dtype))


class EpochTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs["seconds"] = round(time.perf_counter() - self._t0, 2)


def write_history(run_dir, history):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["epoch", "loss", "val_loss", "val_bpc", "learning_rate", "seconds"],
                            extrasaction="ignore")  # the checkpoint's name and hash stay in state.json
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
    for folder in (run_dir, os.path.join(run_dir, CHECKPOINTS)):
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            if name.startswith(".tmp-"):
                os.unlink(os.path.join(folder, name))


def compile_model(model, hp):
    model.compile(optimizer=keras.optimizers.Adam(hp.learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def new_progress():
    """state.json of a run with no finished epoch."""
    return {"epochs_done": 0, "best_val_loss": None, "history": []}


def read_progress(run_dir):
    """The run's progress (state.json), or None if it has none. A damaged file is a RunError."""
    path = os.path.join(run_dir, PROGRESS)
    try:
        with open(path, encoding="utf-8") as f:
            progress = json.load(f)
        if not (isinstance(progress, dict) and isinstance(progress.get("epochs_done"), int)
                and isinstance(progress.get("history"), list)):
            raise ValueError("it lacks epochs_done or history")
        return progress
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as e:
        last = last_checkpoint_on_disk(run_dir)
        raise RunError(f"{path} is damaged ({e}). It is written atomically, so something else changed it: restore "
                       "it from a backup, or train a new run directory"
                       + (f"; the last epoch's weights are intact in {last}" if last else "")) from None


def last_checkpoint_on_disk(run_dir):
    folder = os.path.join(run_dir, CHECKPOINTS)
    names = sorted(n for n in os.listdir(folder) if n.startswith("epoch-")) if os.path.isdir(folder) else []
    return os.path.join(folder, names[-1]) if names else None


def restore_model(run_dir, progress, hp, vocab_size):
    """The model and optimizer as they were after the last finished epoch, checked against state.json."""
    name = progress.get("last_checkpoint")
    if not name:
        raise RunError(f"{os.path.join(run_dir, PROGRESS)} names no checkpoint to resume from (a run made by an "
                       "older estella): train a new run directory")
    path = os.path.join(run_dir, CHECKPOINTS, name)
    if not _intact(run_dir, name, progress.get("last_sha256")):
        good = [row["checkpoint"] for row in progress["history"][:-1] if _intact(run_dir, row.get("checkpoint"), row.get("sha256"))]
        fallback = (f"; the last good epoch checkpoint is {os.path.join(run_dir, CHECKPOINTS, good[-1])}: copy the "
                    "run's files up to that epoch into a new run directory, or train a new one") if good else \
            "; no earlier intact checkpoint is left: train a new run directory"
        state = "damaged (its sha256 is not the one training recorded)" if os.path.isfile(path) else "missing"
        raise RunError(f"cannot resume {run_dir}: {path} is {state}{fallback}")
    model = build_model(vocab_size, hp.embedding_dim, hp.units, cell=hp.cell, dropout=hp.dropout)
    compile_model(model, hp)
    model.optimizer.build(model.trainable_variables)  # so that load_weights fills its slots too
    model.load_weights(path)
    # Verify that the optimizer came back with the model: its step count and learning rate.
    iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    if iterations != progress.get("iterations") or not math.isclose(lr, progress.get("learning_rate", -1), rel_tol=1e-6):
        raise RunError(f"cannot resume {run_dir}: {path} holds an optimizer at step {iterations} with learning rate "
                       f"{lr:g}, but state.json says step {progress.get('iterations')}, rate {progress.get('learning_rate')}")
    return model


def _intact(run_dir, name, sha256):
    path = os.path.join(run_dir, CHECKPOINTS, name or "")
    return bool(name) and os.path.isfile(path) and sha256_file(path) == sha256


def train(run_dir, corpus_source, preset_name=None, cache_dir=None, verbose="auto", data_dir=None,
          mixed_precision=None, distribute="none", **overrides):
    """Train a run, or continue it exactly from its last finished epoch. Returns the run's progress dict.

    preset_name None means the run's own preset on resume, "default" for a new run.
    data_dir: a folder from `estella prepare`, read from disk instead of corpus_source.
    mixed_precision: auto|off|bfloat16|float16 (build/precision.py); None: off, or a resumed run's own.
    distribute: none|mirrored|multi-worker (build/distribute.py).
    The chief holds the run's exclusive lock throughout: a second trainer on the same directory fails
    at once (RunLocked). Other workers of a multi-worker run write nothing there, so take no lock."""
    config_mod.preset(preset_name or "default", **overrides)  # bad values (ValueError) write nothing, not even the folder
    dist = distribute_mod.setup(distribute)  # first: a multi-worker strategy must start before TensorFlow runs
    with runlock.exclusive(run_dir) if dist.is_chief else contextlib.nullcontext():
        return _train(run_dir, corpus_source, preset_name, cache_dir, verbose, data_dir, mixed_precision, dist, overrides)


def _train(run_dir, corpus_source, preset_name, cache_dir, verbose, data_dir, mixed_precision, dist, overrides):
    progress = read_progress(run_dir)
    resuming = progress is not None and progress["epochs_done"] > 0
    if resuming:
        cfg = config_mod.load_config(run_dir)
        hp = cfg["hparams"]
        # Only the epoch count may change on resume; anything else would be another run.
        try:
            changed = config_mod.changed_on_resume(hp, **overrides)
        except ValueError as e:
            raise RunError(f"cannot resume {run_dir}: {e}") from None
        if preset_name is not None and preset_name != cfg["preset"]:
            changed["preset"] = (cfg["preset"], preset_name)
        if changed:
            has = ", ".join(f"--{name.replace('_', '-')} {_flag_value(run)} (asked: {_flag_value(asked)})"
                            for name, (run, asked) in sorted(changed.items()))
            raise RunError(f"{run_dir} was trained with other settings; cannot change {sorted(changed)} on resume: "
                           f"the run has {has} (train a new run directory instead)")
        if overrides.get("epochs"):
            hp.epochs = overrides["epochs"]
            hp.check()
        preset_name = cfg["preset"]
        saved_precision = cfg.get("mixed_precision", "off")
        if mixed_precision not in (None, saved_precision):
            raise RunError(f"{run_dir} was trained with --mixed-precision {saved_precision}; cannot change it to "
                           f"{mixed_precision} on resume")
        mixed_precision = saved_precision
    else:
        preset_name = preset_name or "default"
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
                             steps_per_epoch=hp.steps_per_epoch, workers=1)
    val_data = DiskWindows(val_ids, hp.seq_length, hp.batch_size, shuffle=False, steps_per_epoch=hp.validation_steps)

    if dist.is_chief:  # other workers of a multi-worker run write nothing
        os.makedirs(run_dir, exist_ok=True)
        clear_stale_temp_files(run_dir)
    with dist.scope(), precision.policy(mixed_precision):
        if resuming:
            model = restore_model(run_dir, progress, hp, len(vocab))
            initial_epoch = progress["epochs_done"]
            print(f"resuming {run_dir} after epoch {initial_epoch} (best val_loss {progress['best_val_loss']:.4f})")
        else:
            if dist.is_chief:
                config_mod.save_config(os.path.join(run_dir, "config.json"), preset_name, hp, len(vocab),
                                       corpus=corpus_entry, mixed_precision=mixed_precision)
                vocab.save(os.path.join(run_dir, "vocab.json"))
            model = build_model(len(vocab), hp.embedding_dim, hp.units, cell=hp.cell, dropout=hp.dropout)
            compile_model(model, hp)
            progress = new_progress()
            initial_epoch = 0
    if initial_epoch >= hp.epochs:
        print(f"{run_dir} already has {initial_epoch} epochs (--epochs {hp.epochs}); nothing to do")
        return progress

    print(f"training {run_dir}: V={len(vocab)} E={hp.embedding_dim} {hp.describe()} "
          f"params={model.count_params():,} train={len(train_ids):,} chars val={len(val_ids):,} chars "
          f"steps/epoch={len(train_data)} backend={keras.backend.backend()} precision={mixed_precision} "
          f"distribute={dist.describe()}", flush=True)
    # Halve the step size when validation stalls: cheaper than stopping early.
    reduce_lr = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1,
                                                  min_lr=hp.learning_rate / 16, verbose=1)
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=hp.patience)
    checkpoint = RunCheckpoint(dist.checkpoint_dir(run_dir), progress, {"reduce_lr": reduce_lr, "early_stopping": early_stopping})
    callbacks = [EpochStart(train_data, hp.seed), keras.callbacks.TerminateOnNaN(), EpochTimer(), reduce_lr, early_stopping, checkpoint]
    try:
        # shuffle=False: the data shuffles itself by epoch; Keras would reorder its batches with Python's
        # global random, which a resumed run cannot replay.
        with dist.fitting(model):
            model.fit(train_data, validation_data=val_data, epochs=hp.epochs, initial_epoch=initial_epoch,
                      callbacks=callbacks, verbose=verbose, shuffle=False)
    finally:
        dist.close()
        if progress["epochs_done"] == 0 and dist.is_chief:
            forget_unfinished_run(run_dir)
    if not dist.is_chief:
        return progress
    if checkpoint.diverged:
        d = checkpoint.diverged
        kept = (f"{run_dir} keeps epoch {progress['epochs_done']} as its last and epoch {progress['best_epoch']} "
                f"(val_loss {progress['best_val_loss']:.4f}) as its best" if progress["epochs_done"]
                else "no epoch finished, so nothing was kept")
        raise RunError(f"training diverged in epoch {d['epoch']}: the loss became {d['loss']} (val_loss "
                       f"{d['val_loss']}); {kept}. Train a new run with a lower --learning-rate")
    print(f"best: epoch {progress['best_epoch']}, val_loss {progress['best_val_loss']:.4f} nats "
          f"= {progress['best_val_bpc']:.3f} bits/char -> {os.path.join(run_dir, 'best.weights.h5')}")
    return progress


def _flag_value(value):
    return config_mod.format_units(value) if isinstance(value, list) else value


def forget_unfinished_run(run_dir):
    """A run that ends before its first epoch keeps nothing: a rerun then starts clean, with any corpus."""
    for name in ("config.json", "vocab.json", PROGRESS):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.unlink(path)
    clear_stale_temp_files(run_dir)
