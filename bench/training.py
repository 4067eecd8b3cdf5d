"""Training speed, side by side in one process: the original recipe against estella's, and the
options (XLA, the data pipeline), in interleaved rounds of a few steps each.

The original recipe is the chapter's: a Sequential Embedding -> stateful GRU -> Dense model, Adam
defaults, and tf.data as it wrote it (from_tensor_slices -> batch(seq+1) -> map(split) ->
shuffle(10000).batch(64)). Run as a child of the suite: `python -m estella.bench.training ...`.
"""

import argparse
import json
import time

import keras
import numpy as np

from estella.build.config import preset
from estella.build.corpus import load
from estella.build.data import CharWindows, split
from estella.build.model import build_model
from estella.build.train import compile_model
from estella.build.vocab import Vocab

from .stats import inverted, scaled, summary

CASES = {
    "original recipe": "Sequential + stateful GRU, tf.data as in the chapter, fit",
    "estella": "build_model + PyDataset (CharWindows), fit: what `estella train` runs",
    "estella + XLA": "the same, compiled with jit_compile=True (Keras' 'auto' leaves XLA off on CPU)",
    "estella + tf.data": "estella's model fed by the original tf.data pipeline",
    "estella + bf16": "estella under --mixed-precision bfloat16 (Keras' mixed_bfloat16 policy, float32 weights)",
}
# Cases trained under a Keras dtype policy other than float32.
POLICIES = {"estella + bf16": "mixed_bfloat16"}


def original_dataset(ids, seq_length, batch_size):
    import tensorflow as tf

    def split_input_target(chunk):
        return chunk[:-1], chunk[1:]

    sequences = tf.data.Dataset.from_tensor_slices(ids).batch(seq_length + 1, drop_remainder=True)
    return sequences.map(split_input_target).shuffle(10000).batch(batch_size, drop_remainder=True)


def original_model(vocab_size, hp):
    model = keras.Sequential([
        keras.Input(batch_shape=(hp.batch_size, None), dtype="int32"),
        keras.layers.Embedding(vocab_size, hp.embedding_dim),
        keras.layers.GRU(hp.units[0], return_sequences=True, stateful=True, recurrent_initializer="glorot_uniform"),
        keras.layers.Dense(vocab_size),
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def make_case(name, ids, vocab_size, hp):
    """(model, data) for one case."""
    if name == "original recipe":
        return original_model(vocab_size, hp), original_dataset(ids, hp.seq_length, hp.batch_size)
    keras.config.set_dtype_policy(POLICIES.get(name, "float32"))
    model = build_model(vocab_size, hp.embedding_dim, hp.units, cell=hp.cell, dropout=hp.dropout)
    compile_model(model, hp)
    keras.config.set_dtype_policy("float32")
    if name == "estella + XLA":
        model.jit_compile = True
    if name == "estella + tf.data":
        return model, original_dataset(ids, hp.seq_length, hp.batch_size)
    return model, CharWindows(ids, hp.seq_length, hp.batch_size, shuffle=True, seed=hp.seed, workers=1)


class StepClock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.begin, self.ends = time.perf_counter(), []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def measure(corpus, preset_name, cases, steps, rounds, log=print):
    hp = preset(preset_name)
    text = load(corpus).text
    vocab = Vocab.from_text(text)
    # Every case trains on the first 90% and is scored on the rest after the same number of steps.
    ids, val_ids = split(vocab.encode(text), hp.validation_fraction)
    keras.utils.set_random_seed(hp.seed)
    built = {name: make_case(name, ids, len(vocab), hp) for name in cases}
    clock = StepClock()
    first, step_seconds = {}, {name: [] for name in cases}
    # Round 0 traces and compiles; its first step is reported on its own, the rest is warm-up.
    for r in range(rounds + 1):
        for name in cases:
            model, data = built[name]
            model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
            if r == 0:
                first[name] = clock.ends[0] - clock.begin
                log(f"  {preset_name} / {name}: first step {first[name]:.1f} s")
            else:  # step times between batch ends; a fit's first step also starts its pipeline
                step_seconds[name] += list(np.diff(clock.ends))
    val_data = CharWindows(val_ids, hp.seq_length, hp.batch_size, shuffle=False)
    val_loss = {name: float(built[name][0].evaluate(val_data, verbose=0)) for name in cases}
    chars_per_step = hp.batch_size * hp.seq_length
    seconds = {name: summary(step_seconds[name]) for name in cases}
    return {
        "preset": preset_name,
        "hparams": {"embedding_dim": hp.embedding_dim, "cell": hp.cell, "units": hp.units, "dropout": hp.dropout,
                    "seq_length": hp.seq_length,
                    "batch_size": hp.batch_size, "vocab_size": len(vocab)},
        "cases": {name: {
            "about": CASES[name],
            "first_step_s": first[name],
            "ms_per_step": scaled(seconds[name], 1000),
            "chars_per_s": inverted(seconds[name], chars_per_step),
            "jit_compile": bool(built[name][0].jit_compile),
            "dtype_policy": POLICIES.get(name, "float32"),
            "steps_trained": (rounds + 1) * steps,
            "val_loss_after_steps": val_loss[name],
        } for name in cases},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus")
    parser.add_argument("out")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--steps", type=int, default=5, help="steps per fit call (one call per case per round)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    result = measure(args.corpus, args.preset, cases, args.steps, args.rounds)
    result["backend"] = keras.backend.backend()
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
