"""The benchmark's prepare part and its fp32/bf16 training rows, at a tiny size. Structure only:
speed is what `make bench` reports, never what a test asserts."""

import json

import pytest

from estella.bench import suite

pytestmark = pytest.mark.tensorflow


def test_prepare_and_bf16_training_rows(corpus_path, tmp_path):
    settings = suite.Settings(quick=True)
    settings.prepare = (2, 2, 1)
    settings.training = [("tiny", "estella,estella + bf16", 2, 1)]
    out = tmp_path / "out"
    suite.run(out_dir=str(out), corpus=corpus_path, sections=("training", "prepare"), settings=settings,
              cache=str(tmp_path / "cache"), log=lambda *a: None)

    result = json.loads((out / "bench.json").read_text())
    assert result["errors"] == {}
    assert set(result["prepare"]) == {"2 copies of the book", "synthetic ASCII, 2 MB"}
    for p in result["prepare"].values():
        assert p["best_mb_per_s"] > 0 and p["dtype"] == "uint8" and len(p["mb_per_s"]) == 1
    cases = result["training"]["tiny"]["cases"]
    assert cases["estella + bf16"]["dtype_policy"] == "mixed_bfloat16" and cases["estella"]["dtype_policy"] == "float32"
    assert all(c["steps_trained"] == 4 and c["val_loss_after_steps"] > 0 for c in cases.values())
    text = (out / "BENCHMARKS.md").read_text()
    assert "## Preparing a corpus" in text and "| estella + bf16 |" in text and "val loss after the steps" in text
