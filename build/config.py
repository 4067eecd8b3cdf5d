"""Hyper-parameters, the presets that fill them, and the run's config.json."""

import dataclasses
import json
import math
import os
import platform

from .errors import RunError
from .fileio import write_json


@dataclasses.dataclass
class HParams:
    embedding_dim: int
    units: int
    seq_length: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-3
    epochs: int = 50
    patience: int = 5  # epochs without a better validation loss before early stopping
    validation_fraction: float = 0.1
    seed: int = 42
    steps_per_epoch: int | None = None  # None: one pass over the training text
    validation_steps: int | None = None  # None: every window of the validation text; N: N batches spread over it

    def check(self):
        """Raise ValueError naming the flag and what is allowed."""
        for name in ("embedding_dim", "units", "seq_length", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"--learning-rate must be a finite number > 0, got {self.learning_rate}")
        if self.patience < 0:
            raise ValueError(f"--patience must be >= 0, got {self.patience}")
        if not 0 < self.validation_fraction < 0.5:
            raise ValueError(f"--validation-fraction must be in (0, 0.5), got {self.validation_fraction}")
        for name in ("steps_per_epoch", "validation_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{_flag(name)} must be >= 1, got {getattr(self, name)}")


PRESETS = {
    # The original chapter: Embedding 256 -> GRU 1024, sequences of 100, batch 64, Adam defaults.
    "seed": HParams(embedding_dim=256, units=1024, seq_length=100, batch_size=64, learning_rate=1e-3, epochs=50),
    # Sized for `make train` in 10-15 minutes on a 2-core CPU (see README for its measured loss).
    "default": HParams(embedding_dim=256, units=512, seq_length=100, batch_size=64, learning_rate=2e-3,
                       epochs=22, patience=4),
    # For tests and smoke runs: seconds, not minutes.
    "tiny": HParams(embedding_dim=16, units=32, seq_length=32, batch_size=16, learning_rate=1e-2, epochs=2,
                    patience=2),
}


def preset(name: str, **overrides) -> HParams:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    hp = dataclasses.replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
    hp.check()
    return hp


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
        cfg["hparams"] = HParams(**cfg["hparams"])
        return cfg
    except FileNotFoundError:
        raise RunError(f"{run_dir} is not a run directory: {path} is missing (train one with `estella train`)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise RunError(f"{path} is not a valid run config: {e}") from None
