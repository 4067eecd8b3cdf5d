"""Export fixtures: each export is built once per session. TensorFlow is imported inside fixtures only."""

import os
import shutil

import pytest

# 84 distinct characters, the size of Great Expectations' vocabulary.
SEED_CHARS = [chr(c) for c in range(32, 127)][:83] + ["\n"]


@pytest.fixture(scope="session")
def seed_export(tmp_path_factory):
    """(run, export dir) at the seed size: U=1024, E=256, fan-in-scaled random weights, no corpus file."""
    from estella.build.random_run import make_random_run
    from estella.export.pipeline import export_run

    root = tmp_path_factory.mktemp("seed")
    run = make_random_run(str(root / "run"), SEED_CHARS, embedding_dim=256, units=1024)
    export_run(run, str(root / "export"))
    return run, str(root / "export")


@pytest.fixture(scope="session")
def lstm_export(tmp_path_factory):
    """(run, export dir) of a 2-layer LSTM (48 then 32 units, E=16), fan-in-scaled random weights, no corpus."""
    from estella.build.random_run import make_random_run
    from estella.export.pipeline import export_run

    root = tmp_path_factory.mktemp("lstm")
    run = make_random_run(str(root / "run"), SEED_CHARS, embedding_dim=16, units=[48, 32], cell="lstm", seed=1)
    export_run(run, str(root / "export"), log=lambda *a: None)
    return run, str(root / "export")


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory):
    """(run, export dir) of the tiny trained run, written by the CLI to its default folder RUN/export."""
    from estella.runtime.cli import main

    run = str(tmp_path_factory.mktemp("tiny") / "run")
    shutil.copytree(tiny_run, run)  # the shared run stays as other tests expect it
    assert main(["export", run]) == 0
    return run, os.path.join(run, "export")


@pytest.fixture(params=["seed_export", "tiny_export", "lstm_export"])
def export(request):
    return request.getfixturevalue(request.param)
