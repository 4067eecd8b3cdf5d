"""Training: Keras fit with Adam, a checkpoint per epoch, best weights, early stopping, exact resume.

Run directory (runs/<name>/):
    config.json                        every hyper-parameter, the corpus and its sha256, versions
    vocab.json                         the vocabulary
    checkpoints/epoch-003-val1.4321.weights.h5   weights and optimizer after each epoch
    best.weights.h5                    a copy of the checkpoint with the lowest validation loss
    state.json                         the run's progress: epochs done, best, what resume needs, history
    history.csv, history.png           loss per epoch, training and validation
    .lock                              held by the one trainer (see runlock.py)
    .estella-run                       says that estella train made the folder (see runfolder.py)
Every file is written to a temp name and renamed, so a killed run loses at most the current epoch.
state.json is written last each epoch: it is the one commit point, naming the checkpoint to resume from
and recording the sha256 of best.weights.h5, config.json and vocab.json, which export checks.
"""

import contextlib
import copy
import csv
import dataclasses
import io
import math
import os
import shutil
import time

import keras
import numpy as np

from estella.runtime import weights_format

from . import config as config_mod
from . import distribute as distribute_mod
from . import precision
from . import runfolder, runlock
from .corpus import load as load_corpus
from .data import CharWindows, split, windows_needed
from .errors import RunError
from .fileio import atomic_path, check_room, describe_os_error, is_no_space, kill_point, write_atomic, write_json
from .memmap_data import DiskWindows, open_prepared
from .memmap_data import identity as prepared_identity
from .prepare import reading_lock
from .model import build_model
from .runfolder import CHECKPOINTS, PROGRESS, new_progress, read_progress, sha256_file  # noqa: F401 (others import them from here)
from .vocab import Vocab

NATS_TO_BITS = 1 / math.log(2)
# What a resumed run needs from Keras' callbacks: fit() resets them in on_train_begin.
CARRIED = {"reduce_lr": ("wait", "best", "cooldown_counter"),
           "early_stopping": ("wait", "best", "best_epoch", "stopped_epoch")}


def bits_per_char(loss_nats: float) -> float:
    return loss_nats * NATS_TO_BITS


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

    def __init__(self, run_dir, progress, carried, check_data=None):
        super().__init__()
        self.run_dir, self.progress, self.carried, self.check_data = run_dir, progress, carried, check_data
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
        if self.check_data:  # raises if the data changed under the epoch: the epoch is not saved
            self.check_data(epoch + 1, self.progress["epochs_done"])
        try:
            self.save_epoch(epoch, loss, val, logs)
        except Exception as e:  # h5py and matplotlib report a full disk in their own exception types
            if not is_no_space(e):
                raise
            done = self.progress["epochs_done"]
            raise RunError(f"{describe_os_error(e, self.run_dir)}: epoch {epoch + 1} was not saved and "
                           f"{self.run_dir} keeps " + (f"epoch {done}" if done else "nothing") + ". Free some space "
                           "and run the same command again to " + ("resume" if done else "start")) from None

    def save_epoch(self, epoch, loss, val, logs):
        # The epoch's files in an order where a kill anywhere leaves state.json and the files it names
        # agreeing, except between the best weights' copy and state.json (one small write): export
        # detects that by best_sha256 and the next `estella train` repairs it (runfolder.py).
        progress = copy.deepcopy(self.progress)  # self.progress changes only once state.json is written
        name = f"epoch-{epoch + 1:03d}-val{val:.4f}.weights.h5"
        checkpoint = os.path.join(self.run_dir, CHECKPOINTS, name)
        os.makedirs(os.path.dirname(checkpoint), exist_ok=True)
        check_room(checkpoint, checkpoint_bytes(self.model))
        with atomic_path(checkpoint) as tmp:
            self.model.save_weights(tmp)
        kill_point("checkpoint-written")
        digest = sha256_file(checkpoint)
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
        kill_point("history-written")
        if progress.get("best_val_loss") is None or val < progress["best_val_loss"]:
            with atomic_path(os.path.join(self.run_dir, runfolder.BEST)) as tmp:
                shutil.copyfile(checkpoint, tmp)  # the same bytes: no second serialisation
            progress.update(best_val_loss=val, best_val_bpc=bits_per_char(val), best_epoch=epoch + 1,
                            best_checkpoint=name, best_sha256=digest)
            kill_point("best-written")
        write_json(os.path.join(self.run_dir, PROGRESS), progress)  # last: the commit point
        self.progress.clear()
        self.progress.update(progress)


def checkpoint_bytes(model) -> int:
    """At least the size of a checkpoint: the model's and the optimizer's variables, plus room for
    HDF5's headers (a few kB a variable)."""
    variables = list(model.weights) + list(model.optimizer.variables)
    data = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
    return data + 16384 * len(variables) + (1 << 20)


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
          mixed_precision=None, distribute="none", init_from=None, extend_vocab=False, **overrides):
    """Train a run, or continue it exactly from its last finished epoch. Returns the run's progress dict.

    preset_name None means the run's own preset on resume, "default" for a new run.
    data_dir: a folder from `estella prepare`, read from disk instead of corpus_source.
    mixed_precision: auto|off|bfloat16|float16 (build/precision.py); None: off, or a resumed run's own.
    distribute: none|mirrored|multi-worker (build/distribute.py).
    init_from: a run directory whose best weights, architecture and vocabulary a new run starts from;
    extend_vocab: add the corpus' characters that vocabulary lacks (build/init_from.py).
    The chief holds the run's exclusive lock throughout: a second trainer on the same directory fails
    at once (RunLocked). Other workers of a multi-worker run write nothing there, so take no lock."""
    config_mod.preset(preset_name or "default", **overrides)  # bad values (ValueError) write nothing, not even the folder
    runfolder.check_ownership(run_dir)  # before the lock file goes into it
    dist = distribute_mod.setup(distribute)  # a multi-worker strategy must start before TensorFlow runs
    with (runlock.exclusive(run_dir) if dist.is_chief else contextlib.nullcontext(),
          reading_lock(data_dir) if data_dir else contextlib.nullcontext()):  # prepare --force waits for us
        return _train(run_dir, corpus_source, preset_name, cache_dir, verbose, data_dir, mixed_precision, dist, overrides,
                      init_from, extend_vocab)


def _train(run_dir, corpus_source, preset_name, cache_dir, verbose, data_dir, mixed_precision, dist, overrides,
           init_from=None, extend_vocab=False):
    progress = read_progress(run_dir)
    refuse_imported(run_dir, progress)
    resuming = progress is not None and progress["epochs_done"] > 0
    if resuming:
        runfolder.verify_start_files(run_dir, progress)
    cfg, preset_name, hp, mixed_precision = resolve_settings(run_dir, resuming, preset_name, mixed_precision, overrides)
    if init_from and data_dir:
        raise RunError("--init-from takes its text from --corpus; a prepared --data folder has a vocabulary of its own")
    text = load_training_text(data_dir, corpus_source, cache_dir, hp)
    init, text, hp = start_from(run_dir, cfg, init_from, extend_vocab, text, hp, overrides)
    if resuming:
        check_same_corpus(run_dir, cfg, text)
    check_enough_text(text, hp)
    if not resuming:
        check_model_fits(hp, len(text.vocab))
    keras.utils.set_random_seed(hp.seed)
    train_data, val_data = make_datasets(text, hp, on_disk=bool(data_dir))

    if dist.is_chief:  # other workers of a multi-worker run write nothing
        os.makedirs(run_dir, exist_ok=True)
        clear_stale_temp_files(run_dir)
        if resuming:
            runfolder.repair_best_weights(run_dir, progress)
            if "files_sha256" not in progress:  # a run of an earlier estella: its files as they are now
                progress["files_sha256"] = runfolder.start_hashes(run_dir)
    with dist.scope(), precision.policy(mixed_precision):
        if resuming:
            model = restore_model(run_dir, progress, hp, len(text.vocab))
            print(f"resuming {run_dir} after epoch {progress['epochs_done']} "
                  f"(best val_loss {progress['best_val_loss']:.4f})")
        else:
            model = new_model(hp, len(text.vocab))  # first: a model that cannot be built leaves nothing behind
            if init:
                init.apply(model)
            progress = new_progress()
            if dist.is_chief:
                try:
                    progress["files_sha256"] = write_run_start(run_dir, preset_name, hp, text, mixed_precision,
                                                               extra=init and {"init_from": init.record()})
                except OSError as e:
                    forget_unfinished_run(run_dir)
                    raise RunError(f"cannot start the run: {describe_os_error(e, run_dir)}") from None
    initial_epoch = progress["epochs_done"]
    if initial_epoch >= hp.epochs:
        print(f"{run_dir} already has {initial_epoch} epochs (--epochs {hp.epochs}); nothing to do")
        return progress

    print(f"training {run_dir}: V={len(text.vocab)} E={hp.embedding_dim} {hp.describe()} "
          f"params={model.count_params():,} train={len(text.train_ids):,} chars val={len(text.val_ids):,} chars "
          f"steps/epoch={len(train_data)} backend={keras.backend.backend()} precision={mixed_precision} "
          f"distribute={dist.describe()}", flush=True)
    checkpoint, callbacks = make_callbacks(dist.checkpoint_dir(run_dir), progress, hp, train_data,
                                           text.check_unchanged)
    fit_epochs(model, train_data, val_data, hp, initial_epoch, callbacks, verbose, dist, run_dir, progress)
    if not dist.is_chief:
        return progress
    report_outcome(run_dir, progress, checkpoint.diverged)
    return progress


def resolve_settings(run_dir, resuming, preset_name, mixed_precision, overrides):
    """(config.json or None, preset name, hyper-parameters, precision): a resumed run's own settings,
    of which only the epoch count may change; a new run's from its preset and flags."""
    if not resuming:
        preset_name = preset_name or "default"
        return None, preset_name, config_mod.preset(preset_name, **overrides), precision.resolve(mixed_precision or "off")
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
    saved_precision = cfg.get("mixed_precision", "off")
    if mixed_precision not in (None, saved_precision):
        raise RunError(f"{run_dir} was trained with --mixed-precision {saved_precision}; cannot change it to "
                       f"{mixed_precision} on resume")
    return cfg, cfg["preset"], hp, precision.resolve(saved_precision)


@dataclasses.dataclass
class TrainingText:
    """What a run trains on: the vocabulary, the two parts' ids, and config.json's "corpus" entry."""
    source: str  # the corpus source or the prepared folder, as the user named it
    vocab: Vocab
    train_ids: object  # np.ndarray, or np.memmap for a prepared folder
    val_ids: object
    corpus_entry: dict
    check_unchanged: object = None  # for a prepared folder: (epoch, epochs_done) -> None, raises if it changed

    def recoded(self, vocab: Vocab) -> "TrainingText":
        """The same text in the ids of another vocabulary holding all its characters (a fine-tuned run's)."""
        missing = sorted(set(self.vocab.chars) - set(vocab.chars))
        if missing:
            raise RunError(f"corpus {self.source} has characters that the run's vocabulary lacks: {missing!r}")
        table = np.array([vocab.char_to_id[c] for c in self.vocab.chars], np.int32)
        return dataclasses.replace(self, vocab=vocab, train_ids=table[self.train_ids], val_ids=table[self.val_ids])


def load_training_text(data_dir, corpus_source, cache_dir, hp) -> TrainingText:
    """The prepared folder's ids (left on disk), or the corpus read, encoded and split."""
    if data_dir:
        before = prepared_identity(data_dir)
        prepared = open_prepared(data_dir)
        check = data_guard(data_dir, before)
        check(0, 0)  # prepared again while it was being opened
        return TrainingText(data_dir, prepared.vocab, prepared.train, prepared.val, prepared.corpus_entry(), check)
    corpus = load_corpus(corpus_source, min_chars=4 * windows_needed(hp.seq_length, 1), cache_dir=cache_dir)
    vocab = Vocab.from_text(corpus.text)
    train_ids, val_ids = split(vocab.encode(corpus.text), hp.validation_fraction)
    corpus_entry = {"source": corpus.source, "path": corpus.path, "sha256": corpus.sha256,
                    "chars": len(corpus.text), "train_chars": len(train_ids), "validation_chars": len(val_ids)}
    return TrainingText(corpus_source, vocab, train_ids, val_ids, corpus_entry)


def data_guard(data_dir, at_start):
    """A check that the prepared folder is still the one training started on: DiskWindows reads it
    afresh every batch, so a folder prepared again would feed new ids under the old vocabulary."""
    def check(epoch, epochs_done):
        if prepared_identity(data_dir) != at_start:
            kept = f"the run keeps epoch {epochs_done}" if epochs_done else "no epoch was kept"
            raise RunError(f"--data {data_dir} changed while training read it (prepared again?): epoch {epoch} "
                           f"was not saved and {kept}. Train on the new data in a new run directory")
    return check


def start_from(run_dir, cfg, init_from, extend_vocab, text: TrainingText, hp, overrides):
    """(init or None, text, hp): a new run --init-from RUN takes RUN's weights, architecture and vocabulary
    (build/init_from.py); a resumed one keeps the vocabulary it started with. Others: as they are."""
    from . import init_from as init_from_mod  # here: it reads runs with this module's helpers

    started = ((cfg or {}).get("init_from") or {}).get("run")
    if cfg is not None:  # resuming: --init-from may only repeat the run's own start
        if init_from and (not started or os.path.abspath(init_from) != started):
            raise RunError(f"{run_dir} already has {'a start of its own (' + started + ')' if started else 'trained epochs'}"
                           f"; --init-from {init_from} applies to a new run directory only")
        return None, text.recoded(Vocab.load(os.path.join(run_dir, "vocab.json"))) if started else text, hp
    if not init_from:
        return None, text, hp
    init = init_from_mod.prepare(init_from, run_dir, "".join(text.vocab.chars), extend_vocab, overrides)
    return init, text.recoded(init.vocab), init.new_hparams(hp, overrides)


def refuse_imported(run_dir, progress):
    """An imported run has no checkpoint to resume, and training into it would overwrite its config."""
    if progress and progress.get("imported"):
        raise RunError(f"{run_dir} is an imported model ({progress['imported'].get('source')}); train a new run "
                       f"from it: estella train NEW_RUN --init-from {run_dir} --corpus TEXT")


def check_same_corpus(run_dir, cfg, text: TrainingText):
    """A resumed run must read text of its own vocabulary; another text of it is only warned about."""
    saved = Vocab.load(os.path.join(run_dir, "vocab.json"))
    if saved != text.vocab:
        extra = sorted(set(text.vocab.chars) - set(saved.chars))
        missing = sorted(set(saved.chars) - set(text.vocab.chars))
        raise RunError(f"corpus {text.source} does not match the vocabulary of {run_dir} "
                       f"(new characters: {extra!r}, characters it lacks: {missing!r}); "
                       "train a new run for another corpus")
    if cfg["corpus"]["sha256"] != text.corpus_entry["sha256"]:
        print(f"warning: corpus {text.source} differs from the one {run_dir} started with "
              "(same vocabulary, so training continues)")


def check_enough_text(text: TrainingText, hp):
    need = windows_needed(hp.seq_length, hp.batch_size)
    for part, ids, flag in (("training", text.train_ids, "--batch-size"),
                            ("validation", text.val_ids, "--validation-fraction")):
        if len(ids) < need + hp.seq_length:
            raise RunError(f"the {part} text has {len(ids)} characters, fewer than one batch needs "
                           f"({need + hp.seq_length} at --seq-length {hp.seq_length}, --batch-size "
                           f"{hp.batch_size}): use a longer corpus or a smaller {flag} / --seq-length")


def parameter_count(hp, vocab_size) -> int:
    """The model's weights, counted from its shape without building it."""
    return weights_format.parameter_count(hp.cell, vocab_size, hp.embedding_dim, hp.units)


def check_model_fits(hp, vocab_size):
    """Refuse a model whose training state (weights, gradients, Adam's two moments: 4 float32 copies)
    exceeds this machine's memory, before anything is written or allocated."""
    params = parameter_count(hp, vocab_size)
    need = params * 4 * 4
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # no such sysconf here: leave it to the allocator
        return
    if need > have:
        raise RunError(f"a model of V={vocab_size} E={hp.embedding_dim} {hp.describe()} has {params:,} weights; "
                       f"training it needs about {need / 2**30:,.0f} GiB (weights, gradients and Adam's two "
                       f"moments), more than this machine's {have / 2**30:,.0f} GiB: use a smaller --units or "
                       "--embedding-dim")


def make_datasets(text: TrainingText, hp, on_disk):
    """(training, validation) batches; a prepared corpus (on_disk) stays on disk."""
    window_kind = DiskWindows if on_disk else CharWindows
    train_data = window_kind(text.train_ids, hp.seq_length, hp.batch_size, shuffle=True, seed=hp.seed,
                             steps_per_epoch=hp.steps_per_epoch, workers=1)
    val_data = DiskWindows(text.val_ids, hp.seq_length, hp.batch_size, shuffle=False,
                           steps_per_epoch=hp.validation_steps)
    return train_data, val_data


def write_run_start(run_dir, preset_name, hp, text: TrainingText, mixed_precision, extra=None):
    """Mark the folder as ours, then write config.json (with `extra` fields) and vocab.json; return their
    sha256 for state.json."""
    runfolder.claim(run_dir)
    config_mod.save_config(os.path.join(run_dir, "config.json"), preset_name, hp, len(text.vocab),
                           corpus=text.corpus_entry, mixed_precision=mixed_precision, extra=extra)
    text.vocab.save(os.path.join(run_dir, "vocab.json"))
    return runfolder.start_hashes(run_dir)


def new_model(hp, vocab_size):
    model = build_model(vocab_size, hp.embedding_dim, hp.units, cell=hp.cell, dropout=hp.dropout)
    compile_model(model, hp)
    return model


def make_callbacks(run_dir, progress, hp, train_data, check_data=None):
    """(the RunCheckpoint, every callback in the order fit() needs them)."""
    # Halve the step size when validation stalls: cheaper than stopping early.
    reduce_lr = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1,
                                                  min_lr=hp.learning_rate / 16, verbose=1)
    early_stopping = keras.callbacks.EarlyStopping(monitor="val_loss", patience=hp.patience)
    checkpoint = RunCheckpoint(run_dir, progress, {"reduce_lr": reduce_lr, "early_stopping": early_stopping},
                               check_data)
    kill_at_epoch_start = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs=None: kill_point(f"epoch-{epoch + 1}-begin"))
    callbacks = [EpochStart(train_data, hp.seed), kill_at_epoch_start,
                 keras.callbacks.TerminateOnNaN(), EpochTimer(), reduce_lr, early_stopping, checkpoint]
    return checkpoint, callbacks


def fit_epochs(model, train_data, val_data, hp, initial_epoch, callbacks, verbose, dist, run_dir, progress):
    """Keras fit from initial_epoch; a run that ends before its first epoch finished keeps nothing."""
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


def report_outcome(run_dir, progress, diverged):
    """Fail on a diverged run (naming what was kept), else print the best epoch."""
    if diverged:
        kept = (f"{run_dir} keeps epoch {progress['epochs_done']} as its last and epoch {progress['best_epoch']} "
                f"(val_loss {progress['best_val_loss']:.4f}) as its best" if progress["epochs_done"]
                else "no epoch finished, so nothing was kept")
        raise RunError(f"training diverged in epoch {diverged['epoch']}: the loss became {diverged['loss']} (val_loss "
                       f"{diverged['val_loss']}); {kept}. Train a new run with a lower --learning-rate")
    print(f"best: epoch {progress['best_epoch']}, val_loss {progress['best_val_loss']:.4f} nats "
          f"= {progress['best_val_bpc']:.3f} bits/char -> {os.path.join(run_dir, 'best.weights.h5')}")


def _flag_value(value):
    return config_mod.format_units(value) if isinstance(value, list) else value


def forget_unfinished_run(run_dir):
    """A run that ends before its first epoch keeps nothing: a rerun then starts clean, with any corpus."""
    for name in ("config.json", "vocab.json", PROGRESS):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.unlink(path)
    clear_stale_temp_files(run_dir)
    runfolder.release(run_dir)
