"""--mixed-precision: 16-bit compute, float32 weights, so the export and its parity gate are unchanged."""

import json
import os

import h5py
import keras
import pytest

from estella.build import precision

pytestmark = pytest.mark.tensorflow


def test_a_bfloat16_run_keeps_float32_weights_and_passes_the_export_parity_gate(corpus_slice, tmp_path, capsys):
    from estella.build.model import build_model
    from estella.build.train import train
    from estella.runtime.cli import main

    run = str(tmp_path / "bf16")
    train(run, corpus_slice, "tiny", verbose=0, mixed_precision="bfloat16", epochs=1, steps_per_epoch=10,
          validation_steps=4)
    assert keras.config.dtype_policy().name == "float32"  # the process' policy is given back
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["mixed_precision"] == "bfloat16"
    assert "precision=bfloat16" in capsys.readouterr().out  # the run trained under the bfloat16 policy
    with precision.policy("bfloat16"):  # ... under which the model computes in bfloat16, logits in float32
        model = build_model(10, 4, 8)
    assert model.get_layer("gru").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("logits").compute_dtype == "float32"
    with h5py.File(os.path.join(run, "best.weights.h5")) as f:
        dtypes = set()
        f.visititems(lambda name, obj: dtypes.add(str(obj.dtype)) if isinstance(obj, h5py.Dataset) else None)
    assert {d for d in dtypes if "float" in d} == {"float32"}  # (a seed generator keeps an int64 state)
    assert main(["export", run]) == 0  # the export checks every artifact against Keras, or fails
    with open(os.path.join(run, "export", "manifest.json")) as f:
        assert json.load(f)["parity"]


def test_bfloat16_applies_to_every_layer_of_a_stacked_lstm(corpus_slice, tmp_path):
    from estella.build.model import build_model
    from estella.build.sample import load_reference
    from estella.build.train import train

    with precision.policy("bfloat16"):
        model = build_model(10, 4, [8, 8], cell="lstm", dropout=0.1)
    assert {model.get_layer(name).dtype_policy.name for name in ("lstm", "lstm_1")} == {"mixed_bfloat16"}
    run = str(tmp_path / "bf16-lstm")
    train(run, corpus_slice, "tiny-lstm", verbose=0, mixed_precision="bfloat16", epochs=1, steps_per_epoch=5,
          validation_steps=2)
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["mixed_precision"] == "bfloat16"
    with h5py.File(os.path.join(run, "best.weights.h5")) as f:
        dtypes = set()
        f.visititems(lambda name, obj: dtypes.add(str(obj.dtype)) if isinstance(obj, h5py.Dataset) else None)
    assert {d for d in dtypes if "float" in d} == {"float32"}
    load_reference(run)  # and they load into the float32 step model


def test_resume_keeps_the_precision_and_refuses_another(corpus_slice, tmp_path):
    from estella.build.errors import RunError
    from estella.build.train import train

    run = str(tmp_path / "bf16")
    train(run, corpus_slice, "tiny", verbose=0, mixed_precision="bfloat16", epochs=1, steps_per_epoch=3,
          validation_steps=1)
    with pytest.raises(RunError, match="--mixed-precision bfloat16"):
        train(run, corpus_slice, "tiny", verbose=0, mixed_precision="off", epochs=2)
    state = train(run, corpus_slice, "tiny", verbose=0, epochs=2)  # no flag: the run's own precision
    assert state["epochs_done"] == 2


def test_auto_follows_the_hardware_and_bad_modes_are_refused():
    if precision.gpu_visible():
        assert precision.resolve("auto") == "float16"
    elif precision.cpu_has_bf16() and precision.BF16_FASTER_ON_CPU:  # measured (see build/precision.py)
        assert precision.resolve("auto") == "bfloat16"
    else:
        assert precision.resolve("auto") == "off"
    with pytest.raises(Exception, match="--mixed-precision must be one of"):
        precision.resolve("int8")
