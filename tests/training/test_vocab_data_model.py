import numpy as np
import pytest

from estella.build.config import PRESETS
from estella.build.data import CharWindows, split
from estella.build.model import build_model, build_step_model, copy_weights
from estella.build.vocab import Vocab


def test_vocab_is_sorted_unique_and_round_trips(tmp_path):
    vocab = Vocab.from_text("hello, world\n")
    assert vocab.chars == sorted(set("hello, world\n"))
    ids = vocab.encode("world")
    assert ids.dtype == np.int32 and vocab.decode(ids) == "world"
    vocab.save(str(tmp_path / "vocab.json"))
    again = Vocab.load(str(tmp_path / "vocab.json"))
    assert again == vocab and again.char_to_id == vocab.char_to_id


def test_vocab_rejects_unknown_characters():
    with pytest.raises(ValueError, match=r"\['z'\]"):
        Vocab.from_text("abc").encode("abz")


def test_split_holds_out_the_tail():
    ids = np.arange(1000, dtype=np.int32)
    train, val = split(ids, 0.1)
    assert len(val) == 100 and val[0] == 900 and train[-1] == 899


@pytest.mark.parametrize("shuffle", [True, False])
def test_windows_are_shifted_by_one(shuffle):
    ids = np.arange(5000, dtype=np.int32)
    data = CharWindows(ids, seq_length=10, batch_size=8, shuffle=shuffle, seed=1)
    assert len(data) == (5000 - (10 if shuffle else 0)) // 11 // 8
    for i in range(len(data)):
        x, y = data[i]
        assert x.shape == y.shape == (8, 10)
        np.testing.assert_array_equal(y[:, :-1], x[:, 1:])  # one-character shift
        np.testing.assert_array_equal(x, x[:, :1] + np.arange(10))  # consecutive text
    data.set_epoch(1)  # a new epoch stays in bounds
    x, _ = data[len(data) - 1]
    assert x.max() < 5000


def test_shuffled_epochs_see_other_windows():
    data = CharWindows(np.arange(100_000, dtype=np.int32), seq_length=10, batch_size=4, shuffle=True, seed=0)
    first = np.sort(data.starts.copy())
    data.set_epoch(2)
    assert not np.array_equal(first, np.sort(data.starts))


def test_too_little_text_for_one_batch():
    with pytest.raises(ValueError, match="make no batch"):
        CharWindows(np.arange(50, dtype=np.int32), seq_length=10, batch_size=8)


def test_model_output_shape():
    model = build_model(vocab_size=30, embedding_dim=8, units=16)
    logits = model(np.zeros((3, 7), np.int32))
    assert tuple(logits.shape) == (3, 7, 30)


def test_seed_preset_parameter_counts():
    hp, V = PRESETS["seed"], 84
    model = build_model(V, hp.embedding_dim, hp.units)
    counts = {layer.name: layer.count_params() for layer in model.layers}
    assert counts["embedding"] == V * 256
    assert counts["gru"] == 3 * 1024 * (256 + 1024 + 2)
    assert counts["logits"] == 1024 * V + V


def test_step_model_matches_training_model():
    model = build_model(20, 8, 16)
    step = build_step_model(20, 8, 16)
    copy_weights(model, step)
    ids = np.random.default_rng(0).integers(0, 20, (2, 9)).astype(np.int32)
    full = np.asarray(model(ids))
    state = np.zeros((2, 16), np.float32)
    pieces = []
    for t in range(9):  # one character at a time, carrying the state
        logits, state = step([ids[:, t:t + 1], state])
        pieces.append(np.asarray(logits))
        state = np.asarray(state)
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5)


def test_steps_per_epoch_carries_on_across_passes():
    # 5000 chars make 56 windows of 11 per pass; 3 epochs of 5 batches of 8 need more than one pass
    data = CharWindows(np.arange(5000, dtype=np.int32), seq_length=10, batch_size=8, shuffle=True, seed=2,
                       steps_per_epoch=5)
    seen = []
    for epoch in range(3):
        data.set_epoch(epoch)
        assert len(data) == 5
        for i in range(len(data)):
            x, y = data[i]
            assert x.shape == (8, 10)
            np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
            seen.extend(x[:, 0])
    first_pass = seen[:data.batches_per_pass * 8]
    assert len(set(first_pass)) == len(first_pass)  # a pass uses each window once


def test_data_order_is_a_function_of_seed_and_epoch():
    """What exact resume relies on: epoch 2 of a fresh dataset is epoch 2 of one that ran epochs 0 and 1."""
    def make():
        return CharWindows(np.arange(5000, dtype=np.int32), seq_length=10, batch_size=8, shuffle=True, seed=2,
                           steps_per_epoch=5)
    walked, fresh = make(), make()
    for epoch in range(3):
        walked.set_epoch(epoch)
    fresh.set_epoch(2)
    np.testing.assert_array_equal(walked.starts, fresh.starts)
    walked.set_epoch(1)
    assert not np.array_equal(walked.starts, fresh.starts)
