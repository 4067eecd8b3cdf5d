"""A run folder's own bookkeeping: the marker that says `estella train` made it, its progress
(state.json) and the sha256 of the files that state.json vouches for. No TensorFlow here: the CLI
checks a folder before the slow import.

Whose files: a folder that `estella train` starts a run in is empty (or missing) and gets MARKER
before anything else; a folder holding other files and no marker is the user's, and train refuses
it, so it never overwrites or deletes a file it did not write. A run of an earlier estella (no
marker, but a readable state.json and config.json) is adopted.

What is trusted: state.json is the commit point of each epoch, written last. It records the sha256
of the best weights and of config.json and vocab.json, so a run whose files changed after the
fact (by hand, or a kill between the best weights' copy and state.json) is refused by export
instead of shipping weights or a vocabulary that the manifest does not describe.
"""

import json
import math
import os

from estella.runtime.untrusted_files import file_sha256 as sha256_file  # the one file hash

from .errors import RunError
from .fileio import write_atomic

MARKER = ".estella-run"
LOCK = ".lock"  # runlock.LOCK_FILE; the lock is taken before the folder is checked
PROGRESS = "state.json"
CHECKPOINTS = "checkpoints"
BEST = "best.weights.h5"
START_FILES = ("config.json", "vocab.json")  # written once when the run starts, hashed in state.json


def check_ownership(run_dir):
    """Raise RunError naming the files of a folder that is neither empty nor a run of ours."""
    if not os.path.isdir(run_dir) or os.path.lexists(os.path.join(run_dir, MARKER)):
        return
    present = sorted(set(os.listdir(run_dir)) - {LOCK})
    if not present or _earlier_run(run_dir):
        return
    shown = ", ".join(present[:8]) + (f" and {len(present) - 8} more" if len(present) > 8 else "")
    raise RunError(f"{run_dir} holds files that estella train did not write ({shown}); it only starts a run in an "
                   "empty folder and never overwrites or deletes other files: give another run directory")


def _earlier_run(run_dir):
    """A run made by an estella without the marker: its state.json and config.json read as a run's."""
    try:
        progress = read_progress(run_dir)
    except RunError:
        return False
    return progress is not None and os.path.isfile(os.path.join(run_dir, "config.json"))


def claim(run_dir):
    """Mark the folder as a run of ours: done before the run writes anything else."""
    write_atomic(os.path.join(run_dir, MARKER), b"estella train writes this run folder\n")


def release(run_dir):
    """Unmark a run that ended before its first epoch (its other files are gone already)."""
    path = os.path.join(run_dir, MARKER)
    if os.path.lexists(path):
        os.unlink(path)


def start_hashes(run_dir) -> dict:
    """{name: sha256} of the files written when the run started, as state.json records them."""
    return {name: sha256_file(os.path.join(run_dir, name)) for name in START_FILES}


def new_progress(files_sha256=None):
    """state.json of a run with no finished epoch."""
    progress = {"epochs_done": 0, "best_val_loss": None, "history": []}
    if files_sha256:
        progress["files_sha256"] = files_sha256
    return progress


def read_progress(run_dir):
    """The run's progress (state.json), or None if it has none. A damaged file is a RunError."""
    path = os.path.join(run_dir, PROGRESS)
    try:
        with open(path, encoding="utf-8") as f:
            progress = json.load(f)
        _check_progress(progress)
        return progress
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as e:
        last = last_checkpoint_on_disk(run_dir)
        raise RunError(f"{path} is damaged ({e}). It is written atomically, so something else changed it: restore "
                       "it from a backup, or train a new run directory"
                       + (f"; the last epoch's weights are intact in {last}" if last else "")) from None


def _check_progress(progress):
    """ValueError saying what is wrong with a state.json's fields."""
    if not isinstance(progress, dict):
        raise ValueError("it is not a JSON object")
    if not _is_int(progress.get("epochs_done")) or progress["epochs_done"] < 0:
        raise ValueError("it lacks epochs_done or history")
    if not isinstance(progress.get("history"), list) or not all(isinstance(r, dict) for r in progress["history"]):
        raise ValueError("it lacks epochs_done or history")
    files = progress.get("files_sha256")
    if files is not None and not (isinstance(files, dict) and all(isinstance(v, str) for v in files.values())):
        raise ValueError(f"files_sha256 is {files!r}, not a map of file names to sha256")
    if progress["epochs_done"] == 0:
        return
    best = progress.get("best_val_loss")
    if not (isinstance(best, (int, float)) and not isinstance(best, bool)):
        raise ValueError(f"best_val_loss is {best!r}, not a number")
    for key in ("best_epoch", "iterations"):
        if key in progress and not _is_int(progress[key]):
            raise ValueError(f"{key} is {progress[key]!r}, not an integer")
    for key in ("best_checkpoint", "best_sha256", "last_checkpoint", "last_sha256"):
        if key in progress and not isinstance(progress[key], str):
            raise ValueError(f"{key} is {progress[key]!r}, not a string")
    if "learning_rate" in progress and not (isinstance(progress["learning_rate"], (int, float))
                                            and math.isfinite(progress["learning_rate"])):
        raise ValueError(f"learning_rate is {progress['learning_rate']!r}, not a finite number")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def last_checkpoint_on_disk(run_dir):
    folder = os.path.join(run_dir, CHECKPOINTS)
    names = sorted(n for n in os.listdir(folder) if n.startswith("epoch-")) if os.path.isdir(folder) else []
    return os.path.join(folder, names[-1]) if names else None


def best_checkpoint_if_intact(run_dir, progress):
    """The checkpoint that best.weights.h5 was copied from, if it still has the recorded sha256."""
    name = progress.get("best_checkpoint")
    path = os.path.join(run_dir, CHECKPOINTS, name) if name else None
    if path and os.path.isfile(path) and sha256_file(path) == progress.get("best_sha256"):
        return path
    return None


def verify_run_files(run_dir, progress):
    """Raise RunError unless best.weights.h5, config.json and vocab.json are the files state.json
    vouches for. Export runs it before it reads anything else."""
    config = os.path.join(run_dir, "config.json")
    if progress is None and not os.path.isfile(config):
        raise RunError(f"{run_dir} is not a run directory: {config} is missing (train one with `estella train`)")
    if progress is None or progress.get("best_sha256") is None:
        raise RunError(f"{run_dir} has no finished epoch ({os.path.join(run_dir, PROGRESS)} names no best weights): "
                       "train it with `estella train` first")
    best = os.path.join(run_dir, BEST)
    if not os.path.isfile(best):
        raise RunError(f"{best} is missing: the run has no finished epoch yet (train it with `estella train`)")
    if sha256_file(best) != progress["best_sha256"]:
        source = best_checkpoint_if_intact(run_dir, progress)
        hint = (f"; the best epoch's checkpoint {source} is intact: copy it over {best}, or resume the run with "
                "`estella train`, which repairs it" if source else "; train a new run directory")
        raise RunError(f"{best} is not the best epoch's weights ({os.path.join(run_dir, PROGRESS)} records another "
                       f"sha256 for epoch {progress.get('best_epoch')}): the file was changed or a training run was "
                       f"killed while writing it{hint}")
    verify_start_files(run_dir, progress)


def verify_start_files(run_dir, progress):
    """Raise RunError unless config.json and vocab.json have the sha256 that state.json records."""
    files = progress.get("files_sha256")
    for name in START_FILES if files is not None else ():  # a run of an earlier estella records none
        path = os.path.join(run_dir, name)
        if not os.path.isfile(path) or sha256_file(path) != files.get(name):
            state = "missing" if not os.path.isfile(path) else "changed since training wrote it"
            raise RunError(f"{path} is {state} (its sha256 is not the one {os.path.join(run_dir, PROGRESS)} "
                           "records): the run's files no longer describe its weights; restore it from a backup or "
                           "train a new run directory")


def repair_best_weights(run_dir, progress):
    """Copy the best epoch's checkpoint over best.weights.h5 where the two differ: a run killed after
    copying a new best but before state.json named it. Only the trainer, which owns the run, does this."""
    best = os.path.join(run_dir, BEST)
    if progress.get("best_sha256") is None or (os.path.isfile(best) and sha256_file(best) == progress["best_sha256"]):
        return
    source = best_checkpoint_if_intact(run_dir, progress)
    if source is None:
        raise RunError(f"{best} is not the best epoch's weights and the checkpoint it came from "
                       f"({progress.get('best_checkpoint')}) is damaged or missing: train a new run directory")
    with open(source, "rb") as f:
        write_atomic(best, f.read())
    print(f"repaired {best} from {source} (a run killed while it wrote a new best)")
