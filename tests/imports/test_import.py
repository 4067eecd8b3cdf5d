"""`estella import`: models made by the real libraries become runs that export, and every exported
artifact writes greedily the text the source model writes in its own library."""

import json
import os
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow

FLOAT_BACKENDS = ("numpy", "onnx", "tflite", "savedmodel")


def cli(capsys, *args):
    from estella.runtime.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.err


def greedy(export_dir, backend, prime, chars):
    """The exported artifact's greedy text: the prime at once, then one argmax character at a time."""
    from estella.runtime.backends import open_backend
    from estella.runtime.manifest import load_manifest

    vocab = load_manifest(export_dir)["model"]["vocab"]
    step = open_backend(export_dir, backend=backend, precision="float32")
    ids = np.array([[vocab.index(c) for c in prime]], np.int32)
    state, text = step.initial_state(1), prime
    for _ in range(chars):
        logits, state = step.step(ids, state)
        next_id = int(np.argmax(logits[0, -1]))
        text += vocab[next_id]
        ids = np.array([[next_id]], np.int32)
    return text


def import_and_export(capsys, source, vocab, run):
    code, err = cli(capsys, "import", source, run, "--vocab", vocab)
    assert code == 0, err
    code, err = cli(capsys, "export", run)
    assert code == 0, err
    with open(os.path.join(run, "export", "manifest.json"), encoding="utf-8") as f:
        return json.load(f)


def check_greedy(export_dir, source_dir):
    with open(os.path.join(source_dir, "greedy.json"), encoding="utf-8") as f:
        expected = json.load(f)
    prime, text = expected["prime"], expected["text"]
    for backend in FLOAT_BACKENDS:
        assert greedy(export_dir, backend, prime, len(text) - len(prime)) == text, backend


def test_the_chapters_checkpoint_deploys_in_two_commands(capsys, chapter_source, source_text, tmp_path):
    """`estella import ./checkpoints runs/book --vocab book.txt`, then `estella export runs/book`."""
    run = tmp_path / "runs" / "book"
    manifest = import_and_export(capsys, os.path.join(chapter_source, "checkpoints"), source_text, run)
    imported = manifest["provenance"]["import"]
    assert imported["format"] == "checkpoint" and imported["source"].endswith("ckpt_1")
    assert [f["path"].rsplit("/", 1)[1] for f in imported["files"]] == ["ckpt_1.index",
                                                                        "ckpt_1.data-00000-of-00001"]
    assert [layer["class"] for layer in imported["layers"]] == ["Embedding", "GRU", "Dense"]
    reference = manifest["parity"]["reference"]
    assert reference["kind"] == "source" and reference["library"].startswith("tf-keras ")
    assert all(a["passed"] for a in manifest["parity"]["artifacts"].values())
    with open(source_text, encoding="utf-8") as f:
        assert manifest["model"]["vocab"] == sorted(set(f.read()))
    check_greedy(run / "export", chapter_source)


def test_sample_on_an_imported_run_writes_the_sources_text(capsys, chapter_run, chapter_source):
    """`estella sample --temperature 0` (estella's Keras rebuild) agrees with the chapter's own greedy text."""
    with open(os.path.join(chapter_source, "greedy.json"), encoding="utf-8") as f:
        expected = json.load(f)
    from estella.runtime.cli import main

    code = main(["sample", chapter_run, "--prime", expected["prime"], "--temperature", "0",
                 "--chars", str(len(expected["text"]) - len(expected["prime"]))])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out == expected["text"] + "\n"


def test_a_keras2_h5_file(capsys, h5_source, source_text, tmp_path):
    with open(source_text, encoding="utf-8") as f:
        chars = sorted(set(f.read()))
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps(chars), encoding="utf-8")  # the JSON list form of --vocab
    run = tmp_path / "h5"
    manifest = import_and_export(capsys, os.path.join(h5_source, "model.h5"), vocab, run)
    assert manifest["provenance"]["import"]["format"] == "h5"
    assert manifest["parity"]["reference"]["library"].startswith("tf-keras ")
    with open(run / "config.json", encoding="utf-8") as f:
        assert json.load(f)["hparams"]["dropout"] == pytest.approx(0.1)  # its Dropout layer, for a fine-tuned run
    check_greedy(run / "export", h5_source)


def test_a_keras3_file(capsys, keras_gru_source, source_text, tmp_path):
    run = tmp_path / "k3"
    manifest = import_and_export(capsys, os.path.join(keras_gru_source, "model.keras"), source_text, run)
    assert manifest["parity"]["reference"]["library"].startswith("keras 3.")
    check_greedy(run / "export", keras_gru_source)


def test_a_keras3_lstm_stack_imports(capsys, lstm_source, source_text, tmp_path):
    run = tmp_path / "lstm"
    code, err = cli(capsys, "import", os.path.join(lstm_source, "model.keras"), run, "--vocab", source_text)
    assert code == 0, err
    with open(run / "config.json", encoding="utf-8") as f:
        cfg = json.load(f)
    hp = cfg["hparams"]
    assert (hp["cell"], hp["layers"], hp["units"], hp["dropout"]) == ("lstm", 2, [16, 12], pytest.approx(0.1))
    assert [layer["class"] for layer in cfg["import"]["layers"]] == ["Embedding", "LSTM", "Dropout", "LSTM", "Dense"]


def test_the_gate_checks_against_the_source_not_the_rebuild(capsys, chapter_source, source_text, tmp_path):
    """An import whose weights differ from the source's (here: one bias nudged) fails the export's gate."""
    import h5py

    run = tmp_path / "book"
    code, err = cli(capsys, "import", os.path.join(chapter_source, "checkpoints"), run, "--vocab", source_text)
    assert code == 0, err
    with h5py.File(run / "best.weights.h5", "r+") as f:
        f["layers/dense/vars/1"][0] += 0.5  # the output bias (Keras names a Dense's folder after its class)
    from estella.build.runfolder import sha256_file

    state = json.loads((run / "state.json").read_text())  # as an import that misread it would record it
    state["best_sha256"] = sha256_file(run / "best.weights.h5")
    (run / "state.json").write_text(json.dumps(state))
    code, err = cli(capsys, "export", run)
    assert code == 2 and "parity check failed" in err and "Traceback" not in err
    assert not (run / "export").exists()


def test_a_source_that_moved_is_said_in_the_manifest(capsys, chapter_source, source_text, tmp_path):
    """The gate then checks against estella's rebuild, and the manifest says why."""
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(os.path.join(chapter_source, "checkpoints"), checkpoints)
    code, err = cli(capsys, "import", checkpoints, tmp_path / "book", "--vocab", source_text)
    assert code == 0, err
    shutil.rmtree(checkpoints)
    code, err = cli(capsys, "export", tmp_path / "book")
    assert code == 0 and "checking against estella's rebuild of the import, not its source" in err
    manifest = json.loads((tmp_path / "book" / "export" / "manifest.json").read_text())
    assert manifest["parity"]["reference"]["kind"] == "run"
    assert "is no longer there" in manifest["parity"]["reference"]["source_unavailable"]


def keras3_model(path, rnn=None, wrap=None):
    import keras

    layer = rnn or keras.layers.GRU(4, return_sequences=True)
    model = keras.Sequential([keras.Input(shape=(None,), dtype="int32"), keras.layers.Embedding(5, 3),
                              wrap(layer) if wrap else layer, keras.layers.Dense(5)])
    model.save(path)
    return str(path)


@pytest.mark.parametrize("make, message", [
    (lambda p: keras3_model(p, wrap=__import__("keras").layers.Bidirectional),
     "(Bidirectional): Bidirectional layers"),
    (lambda p: keras3_model(p, rnn=__import__("keras").layers.GRU(4, return_sequences=True, reset_after=False)),
     "(GRU): reset_after=False is not supported"),
    (lambda p: keras3_model(p, rnn=__import__("keras").layers.LSTM(4, return_sequences=True, activation="relu")),
     "(LSTM): activation='relu' is not supported; it must be 'tanh'"),
], ids=["bidirectional", "reset-after-false", "relu"])
def test_refused_keras_files(capsys, tmp_path, make, message):
    source = make(tmp_path / "model.keras")
    vocab = tmp_path / "v.json"
    vocab.write_text(json.dumps(list("abcde")))
    code, err = cli(capsys, "import", source, tmp_path / "run", "--vocab", vocab)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_attention_is_refused(capsys, tmp_path):
    import keras

    ids = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(5, 3)(ids)
    x = keras.layers.GRU(4, return_sequences=True)(x)
    x = keras.layers.Attention()([x, x])
    keras.Model(ids, keras.layers.Dense(5)(x)).save(tmp_path / "m.keras")
    (tmp_path / "v.json").write_text(json.dumps(list("abcde")))
    code, err = cli(capsys, "import", tmp_path / "m.keras", tmp_path / "run", "--vocab", tmp_path / "v.json")
    assert code == 2 and "(Attention): attention is not supported" in err, err
    assert not (tmp_path / "run").exists()


def broken_copy(chapter_source, tmp_path, damage):
    folder = tmp_path / "checkpoints"
    shutil.copytree(os.path.join(chapter_source, "checkpoints"), folder)
    data = folder / "ckpt_1.data-00000-of-00001"
    if damage == "truncated":
        data.write_bytes(data.read_bytes()[:200])
    elif damage == "no-data":
        data.unlink()
    elif damage == "no-index":
        (folder / "ckpt_1.index").unlink()
    return folder


@pytest.mark.parametrize("damage, message", [
    ("truncated", "is incomplete or damaged"),
    ("no-data", "is incomplete: 0 of 1 data files"),
    ("no-index", "no checkpoint in"),
])
def test_half_written_checkpoints(capsys, chapter_source, source_text, tmp_path, damage, message):
    folder = broken_copy(chapter_source, tmp_path, damage)
    code, err = cli(capsys, "import", folder, tmp_path / "run", "--vocab", source_text)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("which, message", [
    ("reset_before", "layer_with_weights-1: a GRU with reset_after=False (bias [3U]) is not supported"),
    ("conv", "layer_with_weights-1 holds ['bias', 'kernel'], not a GRU or LSTM cell"),
])
def test_checkpoints_of_another_shape(capsys, refused_sources, source_text, tmp_path, which, message):
    code, err = cli(capsys, "import", os.path.join(refused_sources, which), tmp_path / "run", "--vocab", source_text)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_bad_vocabulary_and_paths(capsys, chapter_source, source_text, tmp_path):
    checkpoints = os.path.join(chapter_source, "checkpoints")
    short = tmp_path / "short.txt"
    short.write_text("abc", encoding="utf-8")
    code, err = cli(capsys, "import", checkpoints, tmp_path / "run", "--vocab", short)
    assert code == 2 and "gives 3 characters (sorted(set(text))), but the embedding of" in err
    code, err = cli(capsys, "import", tmp_path / "nothing", tmp_path / "run", "--vocab", source_text)
    assert code == 2 and "does not exist" in err
    code, err = cli(capsys, "import", checkpoints, tmp_path / "run", "--vocab", tmp_path / "missing.txt")
    assert code == 2 and "cannot read --vocab" in err
    assert not (tmp_path / "run").exists()


def test_an_existing_run_is_never_overwritten(capsys, chapter_source, source_text, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    code, err = cli(capsys, "import", os.path.join(chapter_source, "checkpoints"), run, "--vocab", source_text)
    assert code == 2 and "already exists and is not empty" in err
    assert os.listdir(run) == ["notes.txt"]
