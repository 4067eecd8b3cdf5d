"""Parity at export time: the numbers in the manifest, the runtime's view, and a broken artifact."""

import json
import os
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow


def test_manifest_holds_passing_parity_numbers(export):
    from estella.export.parity import PRIME_STEPS
    from estella.runtime import parity as measure
    from estella.runtime.manifest import load_manifest

    _, export_dir = export
    manifest = load_manifest(export_dir)
    parity = manifest["parity"]
    assert (parity["tolerance"], parity["int8_min_top1"], parity["int8_range_fraction"]) == (
        measure.FLOAT_TOLERANCE, measure.INT8_TOP1, measure.INT8_RANGE_FRACTION) == (1e-4, 0.95, 0.02)
    assert set(parity["artifacts"]) == {a["name"] for a in manifest["artifacts"]}
    for artifact in manifest["artifacts"]:
        numbers = parity["artifacts"][artifact["name"]]
        assert numbers["passed"] is True and numbers["steps"] == PRIME_STEPS
        assert measure.check_steps(numbers, artifact["precision"]) == []
        if artifact["precision"] == "float32":
            for key in ("zero_dlogits", "zero_dstate", "random_dlogits", "random_dstate", "text_dlogits", "text_dstate"):
                assert numbers[key] <= 1e-4
        else:
            assert numbers["top1"] >= 0.95
            assert 0 < numbers["text_dlogits"] <= 0.02 * numbers["text_range"]  # int8 is not bit-exact


def test_prime_is_real_text_where_the_corpus_exists(tiny_export, seed_export):
    from estella.runtime.manifest import load_manifest

    assert load_manifest(tiny_export[1])["parity"]["prime_source"].startswith("validation text of ")
    assert load_manifest(seed_export[1])["parity"]["prime_source"].startswith("text sampled from the reference")


@pytest.mark.parametrize("backend,precision", [("tflite", "float32"), ("onnx", "float32"), ("savedmodel", "float32"),
                                               ("numpy", "float32")])
def test_runtime_backends_follow_the_reference_along_a_prime(tiny_export, backend, precision):
    """Independent of the parity module: a T>1 call through the runtime against one Keras call."""
    from estella.build.sample import load_reference
    from estella.runtime.backends import open_backend

    run, export_dir = tiny_export
    step_model, vocab, _ = load_reference(run)
    ids = vocab.encode("Mr. Pumblechook's premises in the High-street")[None, :]
    state = np.zeros((1, step_model.inputs[1].shape[-1]), np.float32)
    ref_logits, ref_state = (np.asarray(t) for t in step_model([ids, state]))
    logits, new_state = open_backend(export_dir, backend, precision).step(ids, state)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-4)
    np.testing.assert_allclose(new_state, ref_state, atol=1e-4)


def perturbed_tflite(write_tflite):
    """A writer that builds the float TFLite file from slightly wrong weights: a broken artifact."""
    def write(weights, path, int8=False):
        if not int8:
            weights = dict(weights, dense_bias=weights["dense_bias"] + 1e-3)
        write_tflite(weights, path, int8=int8)
    return write


def test_a_broken_artifact_fails_the_export_and_leaves_nothing(tiny_export, tmp_path, monkeypatch):
    from estella.export import pipeline
    from estella.export.errors import ParityError

    run, _ = tiny_export
    monkeypatch.setattr(pipeline, "write_tflite", perturbed_tflite(pipeline.write_tflite))
    out = tmp_path / "out"
    with pytest.raises(ParityError, match=r"tflite-float32 \(model.tflite\): zero_dlogits 0.001 > 0.0001") as e:
        pipeline.export_run(run, str(out), prime_steps=20)
    assert "onnx" not in str(e.value)  # only the broken artifact is named
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # the temp folder is gone too


def test_a_failed_force_export_keeps_the_old_export(tiny_export, tmp_path, monkeypatch):
    from estella.export import pipeline
    from estella.export.errors import ParityError

    run, export_dir = tiny_export
    out = tmp_path / "out"
    shutil.copytree(export_dir, out)
    before = {p: (out / p).read_bytes() for p in ("manifest.json", "model.tflite")}
    monkeypatch.setattr(pipeline, "write_tflite", perturbed_tflite(pipeline.write_tflite))
    with pytest.raises(ParityError):
        pipeline.export_run(run, str(out), force=True, prime_steps=20)
    assert {p: (out / p).read_bytes() for p in before} == before
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert json.loads(before["manifest.json"])["parity"]["artifacts"]["tflite-float32"]["passed"]


def writer_with(write, int8, change):
    """A writer for one of the two files of a format (float or int8) from changed weights: a real,
    broken artifact of that format."""
    def wrapped(weights, path, *args, **kwargs):
        if kwargs.get("int8", False) == int8:
            weights = change(dict(weights))
        return write(weights, path, *args, **kwargs)
    return wrapped


def scaled_logits(factor):
    return lambda w: dict(w, dense_kernel=w["dense_kernel"] * factor, dense_bias=w["dense_bias"] * factor)


def refused(run, out, match):
    from estella.export import pipeline
    from estella.export.errors import ExportError

    with pytest.raises(ExportError, match=match) as e:
        pipeline.export_run(run, str(out), prime_steps=40)
    assert not out.exists() and os.listdir(out.parent) == []
    return str(e.value)


def test_an_int8_file_with_doubled_logits_is_refused(tiny_export, tmp_path, monkeypatch):
    """Same argmax everywhere, so top-1 alone would pass it; the |delta logits| rule of the suite does not."""
    from estella.export import pipeline

    monkeypatch.setattr(pipeline, "write_tflite", writer_with(pipeline.write_tflite, True, scaled_logits(2.0)))
    message = refused(tiny_export[0], tmp_path / "out", r"tflite-int8 \(model.int8.tflite\): text_dlogits .* > 2% "
                                                        r"of the reference range")
    assert "top-1" not in message and "onnx" not in message


def test_an_int8_file_below_the_top1_threshold_is_refused(tiny_export, tmp_path, monkeypatch):
    from estella.export import pipeline

    # Negated logits: the argmax becomes the argmin.
    monkeypatch.setattr(pipeline, "write_tflite", writer_with(pipeline.write_tflite, True, scaled_logits(-1.0)))
    refused(tiny_export[0], tmp_path / "out", r"tflite-int8 \(model.int8.tflite\): top-1 agreement \d+\.\d% < 95%")


def test_nan_outputs_are_refused(tiny_export, tmp_path, monkeypatch):
    import numpy as np
    from estella.export import pipeline

    def nan_bias(w):
        bias = w["dense_bias"].copy()
        bias[0] = np.nan
        return dict(w, dense_bias=bias)

    monkeypatch.setattr(pipeline, "write_tflite", writer_with(pipeline.write_tflite, False, nan_bias))
    # The runtime itself refuses NaN weights at load, before the gate measures the NaN outputs.
    refused(tiny_export[0], tmp_path / "out", r"tflite-float32 \(model.tflite\): the runtime refuses it: .* has NaN "
                                              "or infinite weights")


def test_an_onnx_graph_with_a_loop_is_refused(tiny_export, tmp_path, monkeypatch):
    """The step over any T (tf.scan) instead of the written-out T=1 cell: tf2onnx makes it a Loop."""
    import tensorflow as tf
    from estella.export import onnx as onnx_mod
    from estella.export.stepgraph import Stack, graph_weights, sequence, state_size
    from estella.runtime.weights_format import architecture

    def scanning_step(weights, batch_size=None, fold=True):
        w = {k: tf.constant(v) for k, v in graph_weights(weights, fold).items()}
        arch = architecture(weights)

        @tf.function(input_signature=[tf.TensorSpec([batch_size, None], tf.int32, name="ids"),
                                      tf.TensorSpec([batch_size, state_size(weights)], tf.float32, name="state")])
        def step(ids, state):
            logits, new_state = sequence(Stack(w, arch["cell"], arch["units"]), ids, state)
            return {"logits": logits, "new_state": new_state}
        return step

    monkeypatch.setattr(onnx_mod, "step_function", scanning_step)
    refused(tiny_export[0], tmp_path / "out", r"model.onnx: the T=1 step graph contains \['Loop'\]")


def test_export_parity_is_the_suite_measure(tiny_export):
    """The gate's numbers are estella.runtime.parity's, recomputed here from the artifacts and the run."""
    from estella.build.sample import load_reference
    from estella.export.parity import KerasReference, PRIME_STEPS
    from estella.export.validation import validation_text
    from estella.runtime import parity as measure
    from estella.runtime.backends import open_backend
    from estella.runtime.manifest import load_manifest

    run, export_dir = tiny_export
    step_model, vocab, cfg = load_reference(run)
    ids, _ = validation_text(cfg, vocab)
    inputs = measure.make_step_inputs(ids[:PRIME_STEPS])
    reference = measure.probe_steps(KerasReference(step_model), inputs)
    numbers = measure.compare_steps(reference, measure.probe_steps(open_backend(export_dir, "onnx", "int8"), inputs))
    stored = load_manifest(export_dir)["parity"]["artifacts"]["onnx-int8"]
    for key in ("top1", "text_dlogits", "text_range", "zero_dlogits", "random_dlogits"):
        assert stored[key] == pytest.approx(numbers[key], rel=1e-5, abs=1e-6), key


def test_the_reference_samples_with_the_runtimes_sampler(tiny_export):
    """The gate's sampled prime is what the runtime's Generator writes from the same model and seed:
    one sampler (estella.runtime.sampling) for both."""
    from estella.build.sample import load_reference
    from estella.export.parity import KerasReference, sampled_ids
    from estella.runtime.generator import Generator

    step_model, vocab, _ = load_reference(tiny_export[0])
    reference = KerasReference(step_model, vocab.chars)
    ids = sampled_ids(reference, 60, seed=5)
    text = Generator(reference, vocab.chars).generate(vocab.chars[0], 59, temperature=1.0, seed=5)
    assert vocab.decode(ids) == text
    assert len(set(ids.tolist())) > 5  # drawn, not a greedy cycle
