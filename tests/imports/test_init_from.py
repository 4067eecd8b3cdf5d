"""`estella train NEW --init-from RUN`: fine-tuning a trained or imported run on a new text."""

import json
import os
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow

SHORT = ["--preset", "tiny", "--epochs", "1", "--steps-per-epoch", "3", "--validation-steps", "1", "--quiet"]


def cli(capsys, *args):
    from estella.runtime.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def new_text(corpus_path, tmp_path_factory):
    """Another part of the book, with two characters the imported vocabulary lacks."""
    with open(corpus_path, encoding="utf-8") as f:
        text = f.read(112_000)[100_000:]
    path = tmp_path_factory.mktemp("new-text") / "new.txt"
    path.write_text(text + "\n@ # @ #\n" * 3, encoding="utf-8")
    return path


def added_chars(run, text_file):
    from estella.build.vocab import Vocab

    added = sorted(set(text_file.read_text(encoding="utf-8")) - set(Vocab.load(os.path.join(run, "vocab.json")).chars))
    assert {"#", "@"} <= set(added)
    return added


def old_weights(run):
    from estella.build.config import load_config
    from estella.build.model import build_model, layer_names
    from estella.build.vocab import Vocab

    hp = load_config(run)["hparams"]
    vocab = Vocab.load(os.path.join(run, "vocab.json"))
    model = build_model(len(vocab), hp.embedding_dim, hp.units, cell=hp.cell)
    model.load_weights(os.path.join(run, "best.weights.h5"))
    return {name: model.get_layer(name).get_weights() for name in layer_names(hp.cell, hp.layers)}, vocab


def test_extend_vocab_keeps_every_old_weight_exactly(chapter_run, new_text, tmp_path):
    from estella.build import init_from
    from estella.build.model import build_model

    old, vocab = old_weights(chapter_run)
    init = init_from.prepare(chapter_run, tmp_path / "new", new_text.read_text(encoding="utf-8"), True, {})
    added = added_chars(chapter_run, new_text)
    assert init.added == added and init.vocab.chars == vocab.chars + added
    model = build_model(len(init.vocab), init.hparams.embedding_dim, init.hparams.units, cell=init.hparams.cell)
    init.apply(model)
    V = len(vocab)
    (embedding,) = model.get_layer("embedding").get_weights()
    np.testing.assert_array_equal(embedding[:V], old["embedding"][0])
    for got, want in zip(model.get_layer("gru").get_weights(), old["gru"]):
        np.testing.assert_array_equal(got, want)
    kernel, bias = model.get_layer("logits").get_weights()
    np.testing.assert_array_equal(kernel[:, :V], old["logits"][0])
    np.testing.assert_array_equal(bias[:V], old["logits"][1])
    assert kernel.shape == (old["logits"][0].shape[0], V + len(added)) and np.all(bias[V:] == old["logits"][1].min())


def test_fine_tune_an_imported_run_resume_and_export(capsys, chapter_run, new_text, tmp_path):
    new = tmp_path / "new"
    added = added_chars(chapter_run, new_text)
    code, err = cli(capsys, "train", new, "--init-from", chapter_run, "--corpus", new_text, *SHORT)
    assert code == 2 and f"{len(added)} characters that the vocabulary of" in err and repr(added) in err
    assert "--extend-vocab" in err
    assert not (new / "config.json").exists()

    code, err = cli(capsys, "train", new, "--init-from", chapter_run, "--corpus", new_text, "--extend-vocab", *SHORT)
    assert code == 0, err
    cfg = json.loads((new / "config.json").read_text())
    from estella.build.train import sha256_file

    assert cfg["init_from"]["run"] == os.path.abspath(chapter_run)
    assert cfg["init_from"]["sha256"] == sha256_file(os.path.join(chapter_run, "best.weights.h5"))
    assert cfg["init_from"]["added_chars"] == added
    _, vocab = old_weights(chapter_run)
    new_vocab = json.loads((new / "vocab.json").read_text())["chars"]
    assert new_vocab == vocab.chars + added

    code, err = cli(capsys, "train", new, "--corpus", new_text, *SHORT[:2], "--epochs", "2", *SHORT[4:])
    assert code == 0, err
    assert json.loads((new / "state.json").read_text())["epochs_done"] == 2  # resumed, not restarted

    code, err = cli(capsys, "export", new)
    assert code == 0, err
    manifest = json.loads((new / "export" / "manifest.json").read_text())
    assert manifest["model"]["vocab"] == new_vocab
    assert manifest["provenance"]["init_from"]["run"] == os.path.abspath(chapter_run)


def test_an_imported_run_is_not_trained_into(capsys, chapter_run, new_text, tmp_path):
    run = tmp_path / "book"
    shutil.copytree(chapter_run, run)
    before = {name: (run / name).read_bytes() for name in os.listdir(run)}
    code, err = cli(capsys, "train", run, "--corpus", new_text, *SHORT)
    assert code == 2 and "is an imported model" in err and f"--init-from {run}" in err
    assert {name: (run / name).read_bytes() for name in before} == before


def test_bad_starting_points(capsys, chapter_run, new_text, tmp_path):
    from estella.build import runlock

    run = tmp_path / "book"
    shutil.copytree(chapter_run, run)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    cases = [
        (["--init-from", tmp_path / "nothing"], "no such run directory"),
        (["--init-from", run, "--units", "64"], "has another architecture than the flags ask for: --units 64 (it has 16)"),
        (["--init-from", run, "--corpus", empty], f"corpus {empty} is empty"),
        (["--extend-vocab"], "--extend-vocab adds characters to the vocabulary of an --init-from run"),
    ]
    for args, message in cases:
        argv = ["train", tmp_path / "new", *SHORT, *args]
        if "--corpus" not in args:
            argv += ["--corpus", new_text, "--extend-vocab"]
        code, err = cli(capsys, *argv)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
    with runlock.exclusive(run):  # a trainer is writing it
        code, err = cli(capsys, "train", tmp_path / "new", "--init-from", run, "--corpus", new_text, "--extend-vocab", *SHORT)
    assert code == 2 and "is in use" in err
    data = (run / "best.weights.h5").read_bytes()
    (run / "best.weights.h5").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    code, err = cli(capsys, "train", tmp_path / "new", "--init-from", run, "--corpus", new_text, "--extend-vocab", *SHORT)
    assert code == 2 and f"--init-from {run}: " in err and "best.weights.h5 is not the best epoch's weights" in err
    assert not (tmp_path / "new" / "config.json").exists()
