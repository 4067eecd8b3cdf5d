"""`estella prepare` and `estella train --data`: the same text as --corpus, streamed from disk."""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from estella.bench.preparing import synthetic_corpus
from estella.build.corpus import load
from estella.build.data import split
from estella.build.memmap_data import DiskWindows, open_prepared
from estella.build.prepare import prepare

pytestmark = pytest.mark.tensorflow
HERE = os.path.dirname(os.path.abspath(__file__))


def estella(*args):
    return subprocess.run([sys.executable, "-m", "estella.runtime.cli", *args], capture_output=True, text=True)


def test_prepared_book_is_what_corpus_load_reads(corpus_path, tmp_path):
    meta = prepare([corpus_path], str(tmp_path / "data"), log=lambda *_: None)
    data = open_prepared(str(tmp_path / "data"))
    text = load(corpus_path).text
    train_ids, val_ids = split(data.vocab.encode(text), 0.1)
    assert meta["dtype"] == "uint8" and data.train.dtype == np.uint8
    assert np.array_equal(data.train, train_ids) and np.array_equal(data.val, val_ids)
    assert meta["sources"][0]["sha256"] == load(corpus_path).sha256


def test_each_file_is_split_on_its_own_and_wide_vocabularies_take_uint16(shelf, tmp_path):
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "cjk.txt").write_text("".join(chr(0x4E00 + i) for i in range(300)) * 10, encoding="utf-8")
    meta = prepare([shelf, str(wide / "*.txt")], str(tmp_path / "data"), log=lambda *_: None)
    data = open_prepared(str(tmp_path / "data"))
    assert meta["dtype"] == "uint16" and len(data.vocab) > 256 and len(meta["sources"]) == 4
    at = 0
    for entry in meta["sources"]:  # every file's tail, in order, is in val.bin
        with open(entry["path"], encoding="utf-8") as f:
            text = f.read()
        assert entry["validation_chars"] == int(len(text) * 0.1) > 0
        tail = data.vocab.decode(data.val[at:at + entry["validation_chars"]])
        assert tail == text[len(text) - entry["validation_chars"]:]
        at += entry["validation_chars"]


@pytest.mark.parametrize("case, message", [
    ("latin1", "not UTF-8 text"),
    ("empty-folder", "has no .txt files"),
    ("no-match", "matches no files"),
])
def test_prepare_refuses_bad_sources(case, message, shelf, tmp_path):
    if case == "latin1":
        folder = tmp_path / "books"
        folder.mkdir()
        (folder / "good.txt").write_text("plain text\n" * 100, encoding="utf-8")
        (folder / "bad.txt").write_bytes("caf\u00e9\n".encode("latin-1") * 100)
        source, named = str(folder), str(folder / "bad.txt")
    elif case == "empty-folder":
        (tmp_path / "empty").mkdir()
        source = named = str(tmp_path / "empty")
    else:
        source = named = os.path.join(shelf, "*.md")
    result = estella("prepare", source, "--out", str(tmp_path / "data"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and named in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "data")


def test_disk_windows_are_seeded_per_batch_and_spread_validation(shelf, tmp_path):
    prepare([shelf], str(tmp_path / "data"), log=lambda *_: None)
    data = open_prepared(str(tmp_path / "data"))
    a = DiskWindows(data.train, 32, 4, shuffle=True, seed=1, steps_per_epoch=3)
    first = a[2][0]
    a.set_epoch(1)  # what train() calls at the start of epoch 1
    resumed = DiskWindows(data.train, 32, 4, shuffle=True, seed=1, steps_per_epoch=3)
    resumed.set_epoch(1)  # a run resumed after epoch 0 starts there
    assert np.array_equal(a[2][0], resumed[2][0]) and not np.array_equal(a[2][0], first)
    assert a[0][0].dtype == np.int32
    x, y = a[0]
    assert np.array_equal(x[:, 1:], y[:, :-1])
    val = DiskWindows(data.val, 32, 4, shuffle=False, steps_per_epoch=2)
    last_start = 7 * val.stride
    assert len(data.val) - 2 * 33 < last_start + 33 <= len(data.val)  # reaches the end of the split


def test_train_from_prepared_data_and_refuse_another_vocabulary_on_resume(shelf, tmp_path):
    from estella.build.train import train

    prepare([shelf], str(tmp_path / "data"), log=lambda *_: None)
    run_dir = str(tmp_path / "run")
    state = train(run_dir, None, "tiny", verbose=0, data_dir=str(tmp_path / "data"), epochs=1,
                  steps_per_epoch=5, validation_steps=2)
    assert state["epochs_done"] == 1
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f)["corpus"]["files"] == 3
    other = tmp_path / "other"
    other.mkdir()
    (other / "digits.txt").write_text("0123456789 zyx\n" * 3000, encoding="utf-8")
    prepare([str(other)], str(tmp_path / "other-data"), log=lambda *_: None)
    result = estella("train", run_dir, "--preset", "tiny", "--data", str(tmp_path / "other-data"), "--epochs", "2")
    assert result.returncode == 2 and "does not match the vocabulary" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_a_stacked_lstm_trains_from_prepared_data_and_resumes(shelf, tmp_path):
    from estella.build.sample import load_reference
    from estella.build.train import train

    prepare([shelf], str(tmp_path / "data"), log=lambda *_: None)
    run_dir = str(tmp_path / "run")
    settings = dict(verbose=0, data_dir=str(tmp_path / "data"), steps_per_epoch=5, validation_steps=2)
    train(run_dir, None, "tiny-lstm", epochs=1, **settings)
    state = train(run_dir, None, epochs=2, **settings)  # resumed: the run's own preset
    assert state["epochs_done"] == 2
    model, vocab, cfg = load_reference(run_dir)
    assert (cfg["hparams"].cell, cfg["hparams"].units) == ("lstm", [32, 32]) and cfg["corpus"]["files"] == 3
    assert len(vocab) == len(open_prepared(str(tmp_path / "data")).vocab)


def _peak_rss_mb(source, work):
    result = subprocess.run([sys.executable, os.path.join(HERE, "rss_child.py"), source,
                             os.path.join(work, "data"), os.path.join(work, "run")], capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.split("VmHWM")[-1]) / 1024


def test_memory_does_not_grow_with_the_corpus():
    # Temp folders of our own, removed at once: pytest keeps its tmp_path folders, 300 MB each.
    with tempfile.TemporaryDirectory() as small, tempfile.TemporaryDirectory() as large:
        small_mb = _peak_rss_mb(synthetic_corpus(os.path.join(small, "books"), 1, 1), small)
        large_mb = _peak_rss_mb(synthetic_corpus(os.path.join(large, "books"), 300, 30), large)
    print(f"peak RSS: 1 MB corpus {small_mb:.0f} MB, 300 MB corpus {large_mb:.0f} MB")
    assert large_mb - small_mb <= 150, (small_mb, large_mb)
