"""Resume is exact: a run stopped after an epoch and resumed continues as if it had never stopped."""

import numpy as np
import pytest

from estella.build.errors import RunError
from estella.build.sample import load_reference
from estella.build.train import train

pytestmark = pytest.mark.tensorflow

# A learning rate high enough that on this slice epoch 3 is worse than epoch 2: ReduceLROnPlateau
# halves the rate and EarlyStopping counts a bad epoch right after the resume point, so a resume
# that forgot their state (or the data order, or the dropout layers' random state) would train
# epoch 4 differently. One run per cell and depth: a GRU layer, and two LSTM layers with dropout.
SETTINGS = {"tiny": dict(verbose=0, steps_per_epoch=30, learning_rate=0.3),
            "tiny-lstm": dict(verbose=0, steps_per_epoch=30, learning_rate=0.4)}


def _final_weights(run_dir, progress):
    model, _, _ = load_reference(run_dir, weights=f"checkpoints/{progress['last_checkpoint']}")
    return model.get_weights()


@pytest.mark.parametrize("preset", SETTINGS)
def test_stopped_and_resumed_run_equals_a_straight_run(preset, corpus_slice, tmp_path):
    straight = train(str(tmp_path / "straight"), corpus_slice, preset, epochs=4, **SETTINGS[preset])
    rates = [row["learning_rate"] for row in straight["history"]]
    assert rates[3] < rates[2]  # the scenario does exercise a plateau right after epoch 2

    resumed_dir = str(tmp_path / "resumed")
    train(resumed_dir, corpus_slice, preset, epochs=2, **SETTINGS[preset])
    resumed = train(resumed_dir, corpus_slice, epochs=4, verbose=0)  # preset, lr, steps: the run's own

    np.testing.assert_allclose([r["val_loss"] for r in resumed["history"]],
                               [r["val_loss"] for r in straight["history"]], rtol=0, atol=1e-6)
    assert [r["learning_rate"] for r in resumed["history"]] == rates
    assert resumed["callbacks"] == straight["callbacks"] and resumed["iterations"] == straight["iterations"]
    for a, b in zip(_final_weights(resumed_dir, resumed), _final_weights(str(tmp_path / "straight"), straight)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_resume_refuses_another_preset(tiny_run, corpus_slice, tmp_path):
    import shutil
    run_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run, run_dir)
    with pytest.raises(RunError, match=r"cannot change \['preset'\] on resume"):
        train(run_dir, corpus_slice, "default", verbose=0, epochs=3)
