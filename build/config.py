"""Hyper-parameters, the presets that fill them, and the run's config.json."""

import dataclasses
import json
import math
import os
import platform

from .errors import RunError
from .fileio import write_json
from .model import CELLS, MAX_LAYERS

# Wider than any CPU trains in a day; a larger value is a typo (and its weights alone would take gigabytes).
MAX_UNITS = 8192
# What differs from run to run in a model's shape: checked together, refused together on resume.
ARCHITECTURE = ("cell", "layers", "units", "dropout")


@dataclasses.dataclass
class HParams:
    embedding_dim: int
    units: list  # one per recurrent layer
    cell: str = "gru"
    layers: int = 1
    dropout: float = 0.0  # on the embedding output, between layers and before the dense layer
    seq_length: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-3
    epochs: int = 50
    patience: int = 5  # epochs without a better validation loss before early stopping
    validation_fraction: float = 0.1
    seed: int = 42
    steps_per_epoch: int | None = None  # None: one pass over the training text
    validation_steps: int | None = None  # None: every window of the validation text; N: N batches spread over it

    def check(self, saved=False):
        """Raise ValueError naming the flag and what is allowed. saved: a config.json read back, where
        0 epochs is a random-weights run (build/random_run.py)."""
        self.check_architecture()
        for name in ("embedding_dim", "seq_length", "batch_size", "epochs"):
            if getattr(self, name) < (0 if saved and name == "epochs" else 1):
                raise ValueError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"--learning-rate must be a finite number > 0, got {self.learning_rate}")
        if self.patience < 0:
            raise ValueError(f"--patience must be >= 0, got {self.patience}")
        if not 0 < self.validation_fraction < 0.5:
            raise ValueError(f"--validation-fraction must be in (0, 0.5), got {self.validation_fraction}")
        if not 0 <= self.seed < 2**32:  # what numpy's and TensorFlow's seeding accept
            raise ValueError(f"--seed must be in [0, 2**32), got {self.seed}")
        for name in ("steps_per_epoch", "validation_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")

    def check_architecture(self):
        """The model's shape: cell, depth, units per layer, dropout."""
        if self.cell not in CELLS:
            raise ValueError(f"--cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if not (isinstance(self.layers, int) and 1 <= self.layers <= MAX_LAYERS):
            raise ValueError(f"--layers must be from 1 to {MAX_LAYERS}, got {self.layers}")
        if len(self.units) != self.layers:
            raise ValueError(f"--units gives {len(self.units)} values ({format_units(self.units)}) for --layers "
                             f"{self.layers}: give one value for every layer, or one per layer")
        for u in self.units:
            if not (isinstance(u, int) and 1 <= u <= MAX_UNITS):
                raise ValueError(f"--units must be from 1 to {MAX_UNITS} per layer, got {format_units(self.units)}")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):  # nan fails both comparisons
            raise ValueError(f"--dropout must be at least 0 and below 1, got {self.dropout}")

    def describe(self):
        """The architecture as the flags that make it: --cell lstm --layers 2 --units 512,512 --dropout 0.5"""
        return " ".join(f"--{name} {format_units(self.units) if name == 'units' else getattr(self, name)}"
                        for name in ARCHITECTURE)


def format_units(units):
    return ",".join(str(u) for u in units)


def with_overrides(base: HParams, **overrides) -> HParams:
    """base with the given values (None: keep base's), the depth and units resolved together:
    --units with one value sets every layer; a list of several sets --layers to its length (when
    --layers is not given); --layers alone repeats the base's width, when all its layers have one."""
    given = {k: v for k, v in overrides.items() if v is not None}
    units, layers = given.pop("units", None), given.get("layers")
    if units is not None:
        units = [units] if isinstance(units, int) else list(units)
        if len(units) == 1:
            units = units * (layers if layers is not None else base.layers)
        elif layers is None:
            given["layers"] = len(units)
    elif layers is not None and layers != base.layers:
        if len(set(base.units)) != 1:
            raise ValueError(f"--layers {layers} needs --units too: the preset or run has a width per layer "
                             f"({format_units(base.units)})")
        units = base.units[:1] * max(layers, 0)
    hp = dataclasses.replace(base, **given, **({"units": units} if units is not None else {}))
    hp.units = list(hp.units)  # never the preset's own list
    return hp


PRESETS = {
    # The original chapter: Embedding 256 -> GRU 1024, sequences of 100, batch 64, Adam defaults.
    "seed": HParams(embedding_dim=256, units=[1024], seq_length=100, batch_size=64, learning_rate=1e-3, epochs=50),
    # Sized for `make train` in 10-15 minutes on a 2-core CPU (see README for its measured loss).
    "default": HParams(embedding_dim=256, units=[512], seq_length=100, batch_size=64, learning_rate=2e-3,
                       epochs=22, patience=4),
    # For tests and smoke runs: seconds, not minutes.
    "tiny": HParams(embedding_dim=16, units=[32], seq_length=32, batch_size=16, learning_rate=1e-2, epochs=2,
                    patience=2),
    # The same, as a stack: two LSTM layers with dropout, so that tests cover every part of the family.
    "tiny-lstm": HParams(embedding_dim=16, units=[32, 32], cell="lstm", layers=2, dropout=0.1, seq_length=32,
                         batch_size=16, learning_rate=1e-2, epochs=2, patience=2),
    # The best validation loss in about 30 minutes on a 2-core CPU: two GRU layers of 512 with dropout
    # 0.25 against the default's overfitting single layer (a GRU is cheaper than an LSTM of the same
    # width on a CPU, and a narrower embedding pays for part of the second layer). Its 25 epochs took
    # 30 minutes with --mixed-precision auto (bfloat16) on the 2-core EPYC: QUALITY.md.
    "quality": HParams(embedding_dim=128, units=[512, 512], layers=2, dropout=0.25, seq_length=100, batch_size=64,
                       learning_rate=2e-3, epochs=25, patience=4),
    # char-rnn's recipe for a large text (its README): 2 x 512 LSTM, dropout 0.5, sequences of 50,
    # batch 50, learning rate 2e-3. char-rnn feeds one-hot characters; an embedding at least as wide
    # as the vocabulary can learn any input table that one-hot input can.
    "char-rnn": HParams(embedding_dim=128, units=[512, 512], cell="lstm", layers=2, dropout=0.5, seq_length=50,
                        batch_size=50, learning_rate=2e-3, epochs=50, patience=5),
    # For a microcontroller (an ESP32-S3 or a Cortex-M7): its int8-full file (the input table, recurrent
    # kernel and output layer at one byte a weight: V x 3U + U x 3U + U x V) stays under 512 KB at
    # U = 320, and its arena under 64 KB (tests/export/test_micro.py checks both). One GRU layer: the
    # cheapest step to run, for the most units the flash budget allows.
    "micro": HParams(embedding_dim=64, units=[320], seq_length=100, batch_size=64, learning_rate=2e-3, epochs=25,
                     patience=4),
}


def preset(name: str, **overrides) -> HParams:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    hp = with_overrides(PRESETS[name], **overrides)
    hp.check()
    return hp


def changed_on_resume(hp: HParams, **overrides) -> dict:
    """{name: (the run's value, the one asked for)} for every setting the overrides would change on a
    resumed run, but the epoch count (the one thing a resume may change). Raises ValueError for
    overrides that are wrong in themselves."""
    wanted = with_overrides(hp, **{k: v for k, v in overrides.items() if k != "epochs"})
    wanted.check()
    return {name: (getattr(hp, name), getattr(wanted, name)) for name in HParams.__dataclass_fields__
            if name != "epochs" and getattr(hp, name) != getattr(wanted, name)}


def hparams_from_json(saved: dict) -> HParams:
    """A config.json's hparams; one of the previous version (units an int, no cell, layers or dropout)
    reads as the one-layer GRU without dropout that it was."""
    saved = dict(saved)
    units = saved.get("units")
    if isinstance(units, int) and not isinstance(units, bool):
        saved["units"] = units = [units]
    if not (isinstance(units, list) and units and all(isinstance(u, int) and not isinstance(u, bool) for u in units)):
        raise TypeError(f"units is {units!r}, not an integer or a list of integers")
    saved.setdefault("layers", len(saved.get("units") or []))
    hp = HParams(**saved)
    check_types(hp)
    hp.check(saved=True)
    return hp


def check_types(hp: HParams):
    """TypeError naming a hyper-parameter of the wrong JSON type (config.json is read back, not typed)."""
    for field in dataclasses.fields(hp):
        value = getattr(hp, field.name)
        allowed = {int: (int,), float: (int, float), int | None: (int, type(None))}.get(field.type)
        if allowed and (isinstance(value, bool) or not isinstance(value, allowed)):
            raise TypeError(f"{field.name} is {value!r}, not {_type_name(field.type)}")


def _type_name(kind):
    return {int: "an integer", float: "a number"}.get(kind, "an integer or null")


def _flag(name):
    return name.replace("_", "-")


def versions() -> dict:
    import keras
    import numpy

    out = {"python": platform.python_version(), "numpy": numpy.__version__, "keras": keras.__version__,
           "keras_backend": keras.backend.backend()}
    try:
        from importlib.metadata import version
        out["estella"] = version("estella")
    except Exception:
        out["estella"] = "unknown"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        out["tensorflow"] = tf.__version__
    elif keras.backend.backend() == "jax":
        import jax
        out["jax"] = jax.__version__
    return out


def save_config(path, preset_name, hp: HParams, vocab_size: int, corpus: dict, mixed_precision="off", extra=None):
    """`corpus`: source, path, sha256, and the character counts of the text and its two parts.
    `extra`: more top-level fields (a fine-tuned run's "init_from")."""
    write_json(path, {"preset": preset_name, "hparams": dataclasses.asdict(hp), "vocab_size": vocab_size,
                      "corpus": corpus, "mixed_precision": mixed_precision, "versions": versions(), **(extra or {})})


def load_config(run_dir) -> dict:
    path = os.path.join(run_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
        cfg["hparams"] = hparams_from_json(cfg["hparams"])
        if not isinstance(cfg.get("corpus"), dict) or not isinstance(cfg.get("preset"), str):
            raise TypeError("it lacks its preset or corpus entry")
        return cfg
    except FileNotFoundError:
        raise RunError(f"{run_dir} is not a run directory: {path} is missing (train one with `estella train`)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise RunError(f"{path} is not a valid run config: {e}") from None
