"""LSTM stacks imported from both libraries, exported, and run greedily on every float backend."""

import json
import os

import pytest

from test_import import check_greedy, import_and_export

pytestmark = pytest.mark.tensorflow

# The Keras 3 stack's cell state grows to ~250 along the gate's text: the gate compares a state relative
# to its magnitude above 1 (runtime/parity.state_delta), where float32 rounding alone is over 1e-4 absolute.


def test_a_tf_keras_lstm_stack_checkpoint(capsys, chapter_lstm_source, source_text, tmp_path):
    run = tmp_path / "lstm-ckpt"
    manifest = import_and_export(capsys, os.path.join(chapter_lstm_source, "checkpoints"), source_text, run)
    assert manifest["provenance"]["import"]["source"].endswith("ckpt_3")  # the latest of three
    assert [layer["units"] for layer in manifest["model"]["layers"]] == [16, 16]
    assert manifest["parity"]["reference"]["library"].startswith("tf-keras ")
    check_greedy(run / "export", chapter_lstm_source)


def test_a_keras3_lstm_stack(capsys, lstm_source, source_text, tmp_path):
    run = tmp_path / "lstm"
    manifest = import_and_export(capsys, os.path.join(lstm_source, "model.keras"), source_text, run)
    with open(run / "config.json", encoding="utf-8") as f:
        cfg = json.load(f)
    assert [layer["class"] for layer in cfg["import"]["layers"]] == ["Embedding", "LSTM", "Dropout", "LSTM", "Dense"]
    assert manifest["model"]["cell"] == "lstm" and manifest["state"]["shape"] == ["batch", 2 * (16 + 12)]
    assert manifest["parity"]["reference"]["library"].startswith("keras 3.")
    check_greedy(run / "export", lstm_source)
