"""The model family on the training side: --cell, --layers, --units and --dropout, the presets, bad
values refused before anything is written, and a stacked LSTM run that locks, samples and reloads."""

import json
import os
import shutil

import numpy as np
import pytest

from estella.build import runlock
from estella.build.config import PRESETS, changed_on_resume, load_config
from estella.build.errors import RunError
from estella.build.train import train
from estella.runtime.cli import main

pytestmark = pytest.mark.tensorflow


def _files(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in ("config.json", "state.json")}


@pytest.mark.parametrize("args, message", [
    (["--layers", "0"], "--layers must be from 1 to 4, got 0"),
    (["--layers", "5"], "--layers must be from 1 to 4, got 5"),
    (["--dropout", "1"], "--dropout must be at least 0 and below 1, got 1.0"),
    (["--dropout", "-0.1"], "--dropout must be at least 0 and below 1, got -0.1"),
    (["--dropout", "nan"], "--dropout must be at least 0 and below 1, got nan"),
    (["--cell", "rnn"], "--cell must be one of gru, lstm, got 'rnn'"),
    (["--layers", "2", "--units", "64,32,16"], "--units gives 3 values (64,32,16) for --layers 2"),
    (["--units", "0"], "--units must be from 1 to 8192 per layer, got 0"),
    (["--units", "64,-1"], "--units must be from 1 to 8192 per layer, got 64,-1"),
    (["--units", "100000"], "--units must be from 1 to 8192 per layer, got 100000"),
    (["--units", "64,wide"], "argument --units: expected a whole number or a comma list of them"),
])
def test_bad_architecture_flags_exit_2_and_write_nothing(args, message, tmp_path, corpus_slice, capsys):
    run_dir = tmp_path / "run"
    try:
        code = main(["train", str(run_dir), "--preset", "tiny", "--corpus", corpus_slice, *args])
    except SystemExit as e:  # argparse's own errors (a --units that is not numbers)
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not run_dir.exists()


def test_the_api_refuses_bad_values_before_making_the_folder(tmp_path, corpus_slice):
    with pytest.raises(ValueError, match="--layers must be from 1 to 4, got 5"):
        train(str(tmp_path / "run"), corpus_slice, "tiny", verbose=0, layers=5)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, changed, has", [
    ({"cell": "lstm"}, "['cell']", "--cell gru (asked: lstm)"),
    ({"layers": 2}, "['layers', 'units']", "--layers 1 (asked: 2), --units 32 (asked: 32,32)"),
    ({"units": [32, 16]}, "['layers', 'units']", "--units 32 (asked: 32,16)"),
    ({"units": [48]}, "['units']", "--units 32 (asked: 48)"),
    ({"dropout": 0.2}, "['dropout']", "--dropout 0.0 (asked: 0.2)"),
])
def test_resume_refuses_another_architecture_and_says_what_the_run_has(overrides, changed, has, tiny_run,
                                                                       corpus_slice, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run, run_dir)
    before = _files(run_dir)
    with pytest.raises(RunError, match="cannot change") as error:
        train(run_dir, corpus_slice, verbose=0, epochs=3, **overrides)
    assert f"cannot change {changed} on resume: the run has " in str(error.value) and has in str(error.value)
    assert _files(run_dir) == before


def test_resume_accepts_the_runs_own_architecture_spelled_another_way():
    """--units 32 means 32 in every layer: on a run of 2 x 32 that is no change; --layers alone keeps the width."""
    run = PRESETS["tiny-lstm"]
    assert changed_on_resume(run, units=[32], cell="lstm", layers=2, epochs=9) == {}
    assert changed_on_resume(run, units=[32, 32]) == {}
    assert changed_on_resume(run, layers=3) == {"layers": (2, 3), "units": ([32, 32], [32, 32, 32])}
    assert changed_on_resume(run, units=[32]) == {} and run.units == [32, 32]  # the preset is not changed


def test_presets_keep_their_meaning_and_add_stacks():
    for name in ("seed", "default", "tiny"):  # the previous version's presets: one GRU layer, no dropout
        hp = PRESETS[name]
        assert (hp.cell, hp.layers, len(hp.units), hp.dropout) == ("gru", 1, 1, 0.0), name
    assert [PRESETS[n].units[0] for n in ("seed", "default", "tiny")] == [1024, 512, 32]
    char_rnn = PRESETS["char-rnn"]
    assert (char_rnn.cell, char_rnn.units, char_rnn.dropout) == ("lstm", [512, 512], 0.5)
    assert (char_rnn.seq_length, char_rnn.batch_size, char_rnn.learning_rate) == (50, 50, 2e-3)
    for hp in PRESETS.values():
        hp.check()
    assert PRESETS["quality"].layers >= 2 and 0.2 <= PRESETS["quality"].dropout <= 0.3


def test_a_config_of_the_previous_version_reads_as_a_one_layer_gru(tiny_run, tmp_path, capsys):
    """Its config.json had "units": 32 and no cell, layers or dropout; its weights load unchanged."""
    run_dir = str(tmp_path / "old")
    shutil.copytree(tiny_run, run_dir)
    path = os.path.join(run_dir, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    for key in ("cell", "layers", "dropout"):
        del cfg["hparams"][key]
    cfg["hparams"]["units"] = cfg["hparams"]["units"][0]
    with open(path, "w") as f:
        json.dump(cfg, f)
    hp = load_config(run_dir)["hparams"]
    assert (hp.cell, hp.layers, hp.units, hp.dropout) == ("gru", 1, [32], 0.0)
    assert main(["sample", run_dir, "--chars", "30", "--seed", "1"]) == 0
    old = capsys.readouterr().out
    assert main(["sample", tiny_run, "--chars", "30", "--seed", "1"]) == 0
    assert capsys.readouterr().out == old


def test_a_stacked_lstm_run_records_its_architecture_and_learns(tiny_lstm_run):
    with open(os.path.join(tiny_lstm_run, "config.json")) as f:
        hparams = json.load(f)["hparams"]
    assert {k: hparams[k] for k in ("cell", "layers", "units", "dropout")} == \
        {"cell": "lstm", "layers": 2, "units": [32, 32], "dropout": 0.1}
    with open(os.path.join(tiny_lstm_run, "state.json")) as f:
        losses = [row["val_loss"] for row in json.load(f)["history"]]
    with open(os.path.join(tiny_lstm_run, "vocab.json")) as f:
        vocab_size = json.load(f)["size"]
    assert losses[-1] < losses[0] < np.log(vocab_size)


def test_sample_from_a_stacked_lstm_matches_its_training_model(tiny_lstm_run, capsys):
    """`estella sample` runs the step model; fed the same ids it gives the training model's logits
    (dropout off), so every layer's weights and state reached it."""
    import keras

    from estella.build.model import build_model
    from estella.build.sample import load_reference

    assert main(["sample", tiny_lstm_run, "--prime", "Pip", "--chars", "40", "--seed", "3"]) == 0
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("Pip") and len(text) == 43
    step, vocab, cfg = load_reference(tiny_lstm_run)
    hp = cfg["hparams"]
    trained = build_model(len(vocab), hp.embedding_dim, hp.units, cell=hp.cell, dropout=hp.dropout)
    trained.load_weights(os.path.join(tiny_lstm_run, "best.weights.h5"))
    ids = vocab.encode("Pip said, and the sergeant")[None, :]
    expected = keras.ops.convert_to_numpy(trained(ids, training=False))
    state = np.zeros((1, 4 * 32), np.float32)  # h and c of two layers
    first, state = (keras.ops.convert_to_numpy(t) for t in step([ids[:, :10], state]))
    rest, _ = step([ids[:, 10:], state])
    np.testing.assert_allclose(np.concatenate([first, rest], axis=1), expected, atol=1e-5)


def test_a_stacked_run_has_one_trainer(tiny_lstm_run, corpus_slice, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_lstm_run, run_dir)
    with runlock.exclusive(run_dir):  # as another `estella train` holds it
        with pytest.raises(runlock.RunLocked, match=rf"estella train \(pid {os.getpid()}\) is writing it"):
            train(run_dir, corpus_slice, verbose=0, epochs=3)
