"""Parity at export time: the numbers in the manifest, the runtime's view, and a broken artifact."""

import json
import os
import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow


def test_manifest_holds_passing_parity_numbers(export):
    from estella.export.parity import INT8_MIN_TOP1, PRIME_STEPS, TOLERANCE
    from estella.runtime.manifest import load_manifest

    _, export_dir = export
    manifest = load_manifest(export_dir)
    parity = manifest["parity"]
    assert parity["tolerance"] == TOLERANCE == 1e-4 and INT8_MIN_TOP1 == 0.95
    assert set(parity["artifacts"]) == {a["name"] for a in manifest["artifacts"]}
    for artifact in manifest["artifacts"]:
        numbers = parity["artifacts"][artifact["name"]]
        assert numbers["passed"] is True
        assert numbers["one_step"]["batch"] == 4
        assert numbers["prime"]["steps"] == PRIME_STEPS
        if artifact["precision"] == "float32":
            for part in ("one_step", "prime"):
                assert numbers[part]["max_abs_logits"] <= 1e-4 and numbers[part]["max_abs_state"] <= 1e-4
        else:
            assert numbers["prime"]["top1_agreement"] >= 0.95
            assert 0 < numbers["prime"]["max_abs_logits"]  # int8 is not bit-exact: the diff was measured


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
    state = np.zeros((1, step_model.get_layer("gru").units), np.float32)
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
    with pytest.raises(ParityError, match=r"tflite-float32 \(model.tflite\): one_step max_abs_logits = 0.001") as e:
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
