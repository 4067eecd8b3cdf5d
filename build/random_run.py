"""A run directory with random weights: the seed size for parity and benchmarks without training.

Weights are scaled by fan-in (variance 1/fan_in), so activations neither saturate nor vanish; no
training loop is needed to get one. Their logits are flatter than a trained model's (logit_scale
sharpens them). Any cell and depth of the model family: units is an int (one layer) or one value
per layer.
"""

import hashlib
import os

import numpy as np

from estella.runtime.weights_format import GATES

from .config import HParams, save_config
from .fileio import atomic_path, write_json
from .model import build_model, rnn_layer_names, units_list
from .runfolder import BEST, claim, new_progress, sha256_file, start_hashes
from .vocab import Vocab


def make_random_run(run_dir, vocab_chars, embedding_dim=256, units=1024, seed=0, cell="gru", logit_scale=1.0):
    """logit_scale multiplies the dense layer: fan-in weights give logits spread over a range of 1-4,
    a trained model's over 15-25 (PARITY.md); a larger scale gives the sharper distributions of the latter."""
    vocab = Vocab(vocab_chars)
    V, E, units = len(vocab), embedding_dim, units_list(units)
    rng = np.random.default_rng(seed)

    def fan_in(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    G = GATES[cell]
    model = build_model(V, E, units, cell=cell)
    model.get_layer("embedding").set_weights([rng.standard_normal((V, E)).astype(np.float32)])
    fan = E
    for name, U in zip(rnn_layer_names(cell, len(units)), units):
        bias_shape = (2, G * U) if cell == "gru" else (G * U,)
        model.get_layer(name).set_weights([fan_in(fan, G * U), fan_in(U, G * U),
                                           (0.1 * rng.standard_normal(bias_shape)).astype(np.float32)])
        fan = U
    model.get_layer("logits").set_weights([logit_scale * fan_in(fan, V),
                                           (0.1 * logit_scale * rng.standard_normal(V)).astype(np.float32)])

    os.makedirs(run_dir, exist_ok=True)
    claim(run_dir)
    vocab.save(os.path.join(run_dir, "vocab.json"))
    hp = HParams(embedding_dim=E, units=units, cell=cell, layers=len(units), epochs=0)
    source = f"random:seed={seed}" + (f",logit_scale={logit_scale:g}" if logit_scale != 1 else "")
    save_config(os.path.join(run_dir, "config.json"), "random", hp, V, corpus={
        "source": source, "path": None, "sha256": hashlib.sha256(source.encode()).hexdigest(),
        "chars": 0, "train_chars": 0, "validation_chars": 0})
    with atomic_path(os.path.join(run_dir, BEST)) as tmp:
        model.save_weights(tmp)
    # No epoch, but the hashes export checks: these weights and files are the run.
    progress = dict(new_progress(start_hashes(run_dir)), best_sha256=sha256_file(os.path.join(run_dir, BEST)))
    write_json(os.path.join(run_dir, "state.json"), progress)
    return run_dir
