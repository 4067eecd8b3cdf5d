"""`estella train NEW_RUN --init-from RUN`: start a new run from another run's best weights (trained or
imported), with its architecture and vocabulary.

Characters of the new text that the vocabulary lacks are an error listing them, unless
--extend-vocab: then they are appended after the old ones (so every old id keeps its rows) and
the embedding and the output layer get one fresh row (column) each. Every old row and every other
weight is copied exactly. A new output bias starts at the lowest old bias rather than Dense's 0,
so the model does not begin by favouring characters it has never seen.
"""

import dataclasses
import os

import numpy as np

from . import runfolder, runlock
from .config import format_units, load_config, with_overrides
from .errors import RunError
from .runfolder import BEST, read_progress, sha256_file
from .vocab import Vocab

# What the weights' shapes fix; dropout is a training setting, which the new run may change.
ARCHITECTURE_FLAGS = ("embedding_dim", "cell", "layers", "units")


@dataclasses.dataclass
class InitFrom:
    run: str
    weights_path: str
    sha256: str
    hparams: object  # RUN's HParams: its architecture is the new run's
    old_vocab: Vocab
    vocab: Vocab  # the new run's: old_vocab plus `added`
    added: list
    weights: dict = dataclasses.field(repr=False)  # layer name -> arrays of RUN's best weights

    def record(self) -> dict:
        """config.json's "init_from": where the run started."""
        return {"run": self.run, "weights": self.weights_path, "sha256": self.sha256,
                "vocab_size": len(self.old_vocab), "added_chars": self.added}

    def new_hparams(self, hp, overrides):
        """The new run's settings: its preset and flags, with RUN's architecture (and RUN's dropout
        unless --dropout is given)."""
        dropout = overrides.get("dropout")
        return dataclasses.replace(hp, embedding_dim=self.hparams.embedding_dim, cell=self.hparams.cell,
                                   layers=self.hparams.layers, units=list(self.hparams.units),
                                   dropout=self.hparams.dropout if dropout is None else dropout)

    def apply(self, model):
        """Set the new run's freshly built model to RUN's weights; the rows of added characters keep their
        fresh initialisation (output bias: the lowest old one)."""
        old_v = len(self.old_vocab)
        for name, arrays in self.weights.items():
            layer = model.get_layer(name)
            fresh = layer.get_weights()
            if name == "embedding":
                fresh[0][:old_v] = arrays[0]
            elif name == "logits":
                fresh[0][:, :old_v] = arrays[0]
                fresh[1][:old_v] = arrays[1]
                fresh[1][old_v:] = np.min(arrays[1])
            else:
                fresh = arrays
            if [w.shape for w in fresh] != [w.shape for w in layer.get_weights()]:
                raise RunError(f"--init-from {self.run}: layer {name} does not fit the new model")
            layer.set_weights(fresh)


def prepare(init_run, new_run, text, extend_vocab, overrides) -> InitFrom:
    """Read RUN under its shared lock (a trainer writing it makes this fail at once) and check the new
    run's flags and text against it."""
    if os.path.abspath(init_run) == os.path.abspath(new_run):
        raise RunError(f"--init-from {init_run} is the run being trained; give another run directory")
    if not os.path.isdir(init_run):
        raise RunError(f"--init-from {init_run}: no such run directory")
    with runlock.shared(init_run):
        cfg = load_config(init_run)
        progress = read_progress(init_run)
        vocab = Vocab.load(os.path.join(init_run, "vocab.json"))
        path = os.path.join(init_run, BEST)
        try:  # the weights and vocabulary that its state.json vouches for, as export checks them
            runfolder.verify_run_files(init_run, progress)
        except RunError as e:
            raise RunError(f"--init-from {init_run}: {e}") from None
        digest = progress["best_sha256"]
        hp = cfg["hparams"]
        weights = read_weights(path, len(vocab), hp, init_run)
    try:
        asked = with_overrides(hp, **{k: overrides.get(k) for k in ARCHITECTURE_FLAGS})
    except ValueError as e:
        raise RunError(str(e)) from None
    differ = [k for k in ARCHITECTURE_FLAGS if getattr(asked, k) != getattr(hp, k)]
    if differ:
        flags = ", ".join(f"--{k.replace('_', '-')} {_value(getattr(asked, k))} (it has {_value(getattr(hp, k))})"
                          for k in differ)
        raise RunError(f"--init-from {init_run} has another architecture than the flags ask for: {flags}; drop "
                       "those flags, a fine-tuned run keeps the architecture it starts from")
    added = sorted(set(text) - set(vocab.chars))
    if added and not extend_vocab:
        raise RunError(f"the new text has {len(added)} characters that the vocabulary of {init_run} lacks: {added!r}; "
                       "pass --extend-vocab to add them (new embedding and output rows), or remove them from the text")
    return InitFrom(run=os.path.abspath(init_run), weights_path=os.path.abspath(path), sha256=digest, hparams=hp,
                    old_vocab=vocab, vocab=Vocab(vocab.chars + added), added=added, weights=weights)


def _value(value):
    return format_units(value) if isinstance(value, list) else value


def read_weights(path, vocab_size, hp, run) -> dict:
    from .model import build_model, layer_names

    model = build_model(vocab_size, hp.embedding_dim, hp.units, cell=hp.cell, dropout=hp.dropout)
    try:
        model.load_weights(path)
    except Exception as e:  # Keras raises ValueError or OSError by cause
        raise RunError(f"--init-from {run}: cannot load {path} into its own architecture (V={vocab_size} "
                       f"E={hp.embedding_dim} {hp.describe()}): {e}") from None
    return {name: model.get_layer(name).get_weights() for name in layer_names(hp.cell, hp.layers)}
