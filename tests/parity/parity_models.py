"""The models of the parity matrix, their exports, and the Keras reference run through the runtime's interface.

(a) the seed size, U=1024 E=256, fan-in random weights over an 84-character vocabulary;
(b) the default preset trained for a short while (in CI: the tiny preset's test run);
(c) another vocabulary and width: U=64 E=32 over 30 characters;
(d)-(f) stacks of the model family at the seed vocabulary, fan-in random: GRU 2x512, LSTM 2x512,
LSTM 3x256; and (g) a tiny 2-layer LSTM (2x64, E=32), the stacked row `make test` always runs.
The stacks' dense layer is scaled (STACK_LOGIT_SCALE) so that their logits spread like a trained
model's: fan-in random stacks come out nearly uniform (logit range 1-2.3, 6.4 of log2(84) = 6.39 bits
per character), and there the nucleus sampler's order of two almost equal characters turns on the
1e-6 by which any two float formats differ (GRU 2x512 unscaled: the SavedModel's seeded text left the
reference's after 19 characters, with every delta below 1.2e-6).
"""

import os
import string

import numpy as np

from estella.runtime import parity as probe

# Each row of the matrix: (backend, precision). "keras" is the reference itself.
ROWS = (("keras", "float32"), ("savedmodel", "float32"), ("tflite", "float32"), ("tflite", "int8"),
        ("onnx", "float32"), ("onnx", "int8"), ("numpy", "float32"))
SMALL_VOCAB = " \n.," + string.ascii_lowercase  # model (c): 30 characters, lower case only
SEED_VOCAB_SIZE = 84
TEXT_START = "My father's family name"  # chapter I: past the title page and contents
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# model (b) in `make parity`: the default preset trained 3 x 100 steps, kept under runs/ for reuse.
TRAINED_RUN = os.path.join(REPO, "runs", "parity-default")
TRAINED_STEPS_PER_EPOCH, TRAINED_EPOCHS = 100, 3
SHORT_STEPS = 100  # the seed size and the small LSTM in CI: 100 fed-back and generated characters instead of 500

# key -> (title, which export, steps). SLOW_MODELS run in `make parity`, not in `make test`.
MODELS = {
    "a": ("(a) seed size, random weights", "seed", probe.STEPS),
    "a-short": ("(a) seed size, random weights, short (CI)", "seed", SHORT_STEPS),
    "b": ("(b) default preset, trained briefly", "default", probe.STEPS),
    "b-tiny": ("(b) tiny preset, the test suite's run (CI)", "tiny", probe.STEPS),
    "c": ("(c) 30-character vocabulary, U=64", "small", probe.STEPS),
    "d": ("(d) GRU 2x512, random weights", "gru-2x512", probe.STEPS),
    "e": ("(e) LSTM 2x512, random weights", "lstm-2x512", probe.STEPS),
    "f": ("(f) LSTM 3x256, random weights", "lstm-3x256", probe.STEPS),
    "g": ("(g) LSTM 2x64, random weights, short (CI)", "lstm-2x64", SHORT_STEPS),
}
SLOW_MODELS = ("a", "b", "d", "e", "f")
STACK_LOGIT_SCALE = 8.0
# Export name -> (cell, units per layer, embedding_dim) of the random stacks (d)-(g).
STACKS = {"gru-2x512": ("gru", [512, 512], 256), "lstm-2x512": ("lstm", [512, 512], 256),
          "lstm-3x256": ("lstm", [256, 256, 256], 256), "lstm-2x64": ("lstm", [64, 64], 32)}


def keras_reference(run_dir):
    """The run's Keras step model behind the runtime's Backend interface: the export gate's own reference."""
    from estella.build.sample import load_reference
    from estella.export.parity import KerasReference

    model, vocab, _ = load_reference(run_dir)
    return KerasReference(model, vocab.chars)


def corpus_text(corpus_path):
    from estella.build.corpus import load

    text = load(corpus_path).text
    return text[max(text.find(TEXT_START), 0):]


def map_text(text, chars):
    """Real text in a model's vocabulary: characters it lacks become their lower case, else a space, else go."""
    have = set(chars)
    out = []
    for c in text:
        c = c if c in have else c.lower() if c.lower() in have else " " if " " in have else ""
        out.append(c)
    return "".join(out)


def seed_vocab(text):
    """The corpus' characters, padded with unused printable ones to the seed's 84."""
    chars = sorted(set(text))
    spare = [c for c in string.punctuation + string.digits if c not in chars]
    return sorted(chars + spare[:SEED_VOCAB_SIZE - len(chars)])


def random_model(run_dir, chars, embedding_dim, units, seed=0, cell="gru", logit_scale=1.0):
    from estella.build.random_run import make_random_run

    return make_random_run(run_dir, chars, embedding_dim=embedding_dim, units=units, seed=seed, cell=cell,
                           logit_scale=logit_scale)


def trained_default(corpus_path, run_dir=TRAINED_RUN):
    """The default preset trained briefly; a run already there is reused (delete it to retrain)."""
    from estella.build.train import train

    if not os.path.exists(os.path.join(run_dir, "best.weights.h5")):
        train(run_dir, corpus_path, "default", verbose=0, steps_per_epoch=TRAINED_STEPS_PER_EPOCH,
              epochs=TRAINED_EPOCHS)
    return run_dir


def export(run_dir, out_dir):
    """What `estella export RUN --out DIR` does, export-time parity check included."""
    from estella.export.pipeline import export_run

    export_run(run_dir, out_dir)
    return out_dir


def describe(run_dir):
    """V, E, the recurrent layers and where the weights came from, for the table's heading."""
    from estella.build.config import load_config

    cfg = load_config(run_dir)
    hp = cfg["hparams"]
    units = hp.units
    layers = (f"U={units[0]}" if hp.cell == "gru" and len(units) == 1
              else f"{hp.cell.upper()} {'x'.join(map(str, [len(units), units[0]]))}" if len(set(units)) == 1
              else f"{hp.cell.upper()} units {'/'.join(map(str, units))}")
    if cfg["preset"] == "random":
        scale = cfg["corpus"]["source"].partition("logit_scale=")[2]
        origin = "fan-in random weights" + (f", dense layer x{scale}" if scale else "")
    else:
        import json
        with open(os.path.join(run_dir, "state.json"), encoding="utf-8") as f:
            state = json.load(f)
        epochs = f"{state.get('epochs_done')} " + (f"epochs x {hp.steps_per_epoch} steps" if hp.steps_per_epoch
                                                   else "full epochs")
        origin = (f"preset `{cfg['preset']}` trained {epochs}, "
                  f"validation loss {state.get('best_val_loss', float('nan')):.3f}")
    return {"V": cfg["vocab_size"], "E": hp.embedding_dim, "layers": layers, "origin": origin}


def words_array(words):
    return np.array("\n".join(sorted(words)))
