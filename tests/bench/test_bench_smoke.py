"""The benchmark's plumbing on tiny exports, one GRU layer and a stacked LSTM: every path is measured
and the report has every table. Structure only: speed is what `make bench` reports, never what a
test asserts."""

import json
import os

import pytest

from estella.bench import suite
from estella.bench.generation import limit_bytes, load_weights, step_kernels
from estella.bench.models import Shape, vocabulary
from estella.bench.report import LIMITS, RUNTIME_ORDER, STACK_GOAL

pytestmark = pytest.mark.tensorflow  # the TensorFlow baselines and the export need it
ONE, STACK = "tiny (GRU 1x16)", "tiny-lstm (LSTM 2x16)"
TINY = {ONE: Shape(8, (16,)), STACK: Shape(8, (16, 16), "lstm")}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module: the tiny export is made once and both parts use it."""
    return str(tmp_path_factory.mktemp("bench-cache"))


def test_generation_part_writes_report(corpus_path, tmp_path, cache):
    settings = suite.Settings(quick=True)
    settings.repeats, settings.block_seconds, settings.batches = 2, 0.002, "1,2"
    out = tmp_path / "out"
    suite.run(out_dir=str(out), corpus=corpus_path, sections=("generation",), settings=settings,
              shapes=TINY, cache=cache, log=lambda *a: None)

    result = json.loads((out / "bench.json").read_text())
    assert result["errors"] == {}
    V = len(vocabulary(corpus_path))
    assert result["generation"][ONE]["shape"] == {"vocab_size": V, "embedding_dim": 8, "cell": "gru", "units": [16]}
    assert result["generation"][STACK]["shape"]["cell"] == "lstm"
    for name, g in result["generation"].items():
        assert g["shape"]["units"] == list(TINY[name].units) and g["shape"]["embedding_dim"] == 8
        per_char = g["per_char_us"]
        expected = [*RUNTIME_ORDER, *(f"bare {n}" for n in RUNTIME_ORDER if n.startswith(("tflite", "onnx"))),
                    "TF original loop (eager, stateful)", "TF tutorial tf.function step"]
        for case in expected:
            s = per_char[case]
            assert s["n"] == 2 and 0 < s["min"] <= s["median"] <= s["max"], (name, case)
        for limit in LIMITS.values():
            assert any(case.startswith(limit + " (") for case in per_char), (name, limit)
        assert set(g["throughput_chars_per_s"]) == {"1", "2"}
        assert set(RUNTIME_ORDER) <= set(g["throughput_chars_per_s"]["2"])
    # The fold comparison concerns the first layer: measured on one-layer shapes only.
    assert "bare tflite float32 unfolded" in result["generation"][ONE]["per_char_us"]
    assert not any("unfolded" in case for case in result["generation"][STACK]["per_char_us"])

    text = (out / "BENCHMARKS.md").read_text()
    for heading in ("## Generation", f"### {ONE}: V={V} E=8 GRU 1x16", f"### {STACK}: V={V} E=8 LSTM 2x16",
                    "Python overhead", "Throughput", "## Reading"):
        assert heading in text, heading
    assert "**limit float32**" in text and "**limit int8**" in text
    goals = [line for line in text.splitlines() if line.startswith("Goal for stacks")]
    assert len(goals) == 1 and all(f"{p} " in goals[0] for p in STACK_GOAL["paths"]), goals
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_limit_counts_every_kernel_a_stacked_step_reads(corpus_path, cache):
    """Layer 0's input projection is a table lookup; the other kernels are read every character."""
    vocab = vocabulary(corpus_path)
    export_dir = suite.export_models({STACK: TINY[STACK]}, vocab, cache, lambda _, fn: fn(), lambda *a: None)[STACK][1]
    weights = load_weights(export_dir)
    assert step_kernels(weights) == ["layer0_recurrent_kernel", "layer1_kernel", "layer1_recurrent_kernel",
                                     "dense_kernel"]
    V, U = len(vocab), 16
    weights_read = U * 4 * U + U * 4 * U + U * 4 * U + U * V  # LSTM: 4 gates per kernel
    assert limit_bytes(weights) == {"float32": 4 * weights_read, "int8": weights_read}


def test_serving_part_writes_report(corpus_path, tmp_path, cache):
    """A real `estella serve` per precision under 1 and 2 streaming clients, against generate_many,
    for the one-layer model and the stacked one."""
    settings = suite.Settings(quick=True)
    settings.serving = {"clients": "1,2", "requests": 1, "chars": 20, "repeats": 2, "ray_clients": "1,2"}
    out = tmp_path / "out"
    suite.run(out_dir=str(out), corpus=corpus_path, sections=("serving",), settings=settings, shapes=TINY,
              cache=cache, log=lambda *a: None)

    result = json.loads((out / "bench.json").read_text())
    assert result["errors"] == {}
    assert list(result["serving"]) == [ONE, STACK]
    for name, sv in result["serving"].items():
        assert sv["shape"]["units"] == list(TINY[name].units) and sv["shape"]["cell"] == TINY[name].cell
        assert set(sv["precisions"]) == {"int8", "float32"}
        for cases in sv["precisions"].values():
            assert set(cases) == {"1", "2"}
            for c in cases.values():
                for rate in (c["served_chars_per_s"], c["generate_many_chars_per_s"]):
                    assert rate["n"] == 2 and 0 < rate["min"] <= rate["median"] <= rate["max"]
                assert 0 < c["ttft_ms"]["p50"] <= c["ttft_ms"]["p99"] <= c["ttft_ms"]["max"]
            assert cases["2"]["ttft_ms"]["n"] == 2 * 2 * 1  # 2 rounds x 2 clients x 1 request, each one timed
        # The engine in a thread (--engine thread) beside the default, in the same rounds, at 2 clients.
        assert set(sv["engine_thread"]) == {"int8", "float32"}
        assert all(set(cases) == {"2"} and cases["2"]["served_chars_per_s"]["n"] == 2
                   for cases in sv["engine_thread"].values())
        # ... and the engine process on a CPU of its own (--engine-cpus), where there are two CPUs or more.
        pinned = {"2"} if len(os.sched_getaffinity(0)) > 1 else set()
        assert set(sv["engine_pinned"]) == {"int8", "float32"}
        assert all(set(cases) == pinned for cases in sv["engine_pinned"].values())
        # Ray Serve's overhead: one replica on a local Ray cluster against the bare server, same clients.
        assert set(sv["ray"]) == {"int8"} and set(sv["ray"]["int8"]) == {"1", "2"}
        for c in sv["ray"]["int8"].values():
            for side in (c["bare"], c["ray"]):
                assert side["chars_per_s"]["n"] == 2 and 0 < side["chars_per_s"]["min"]
                assert 0 < side["ttft_ms"]["p50"] <= side["ttft_ms"]["p99"]
    text = (out / "BENCHMARKS.md").read_text()
    assert "## Serving" in text and "**tflite int8**" in text and "served ÷ generate_many" in text
    assert "| 2, engine in a thread |" in text
    assert ("| 2, engine on a CPU of its own |" in text) == (len(os.sched_getaffinity(0)) > 1)
    assert f"### {STACK}: 1 requests" in text
    assert "Ray Serve's overhead" in text and "Ray ÷ bare" in text


def test_c_runtime_part_writes_report(corpus_path, tmp_path, cache):
    """estella-c built and run beside the Python runtime: every measure present, the table written."""
    settings = suite.Settings(quick=True)
    settings.probe_repeats, settings.c_chars = 2, 40
    out = tmp_path / "out"
    suite.run(out_dir=str(out), corpus=corpus_path, sections=("c_runtime",), settings=settings, shapes=TINY,
              cache=cache, log=lambda *a: None)

    result = json.loads((out / "bench.json").read_text())
    assert result["errors"] == {}
    c = result["c_runtime"]
    assert c["sizes"]["estella_c_bytes"] > 0 and c["sizes"]["libLiteRt_bytes"] > 0
    for side in ("estella-c", "python"):
        for measure in ("cold_start_s", "chars_per_s", "peak_rss_mib"):
            s = c[ONE][side][measure]
            assert s["n"] == 2 and 0 < s["min"] <= s["median"] <= s["max"], (side, measure)
    assert "## The C runtime (estella-c) beside the Python runtime" in (out / "BENCHMARKS.md").read_text()


def test_training_part_measures_a_stacked_preset(corpus_slice):
    """bench/training.py builds the preset's own model: here two LSTM layers with dropout."""
    import math

    from estella.bench.training import measure

    result = measure(corpus_slice, "tiny-lstm", ["estella"], steps=2, rounds=1, log=lambda *a: None)
    assert {k: result["hparams"][k] for k in ("cell", "units", "dropout")} == {"cell": "lstm", "units": [32, 32],
                                                                              "dropout": 0.1}
    for case in result["cases"].values():
        assert case["steps_trained"] == 4 and math.isfinite(case["val_loss_after_steps"])
