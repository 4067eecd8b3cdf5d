"""Every cell and depth of the model family exports: each artifact passes the export's parity gate
against the Keras step model (the gate's own thresholds), and the manifest describes the stack.

`make test` runs two stacks here, GRU 3 and LSTM 4 layers of unequal widths (the 2-layer LSTM is
tests/export's lstm_export, the 1-layer GRU its seed and tiny exports); `pytest -m slow
tests/export/test_export_model_family.py` runs every combination (about 10 s each).
"""

import pytest

from estella.export.pipeline import ARTIFACTS

pytestmark = pytest.mark.tensorflow

CHARS = [chr(c) for c in range(32, 127)] + ["\n"]
UNITS = {1: [40], 2: [40, 24], 3: [32, 16, 24], 4: [24, 24, 16, 32]}
CASES = [pytest.param(cell, layers, marks=() if (cell, layers) in (("gru", 3), ("lstm", 4)) else pytest.mark.slow,
                      id=f"{cell}-{layers}") for cell in ("gru", "lstm") for layers in UNITS]


@pytest.mark.parametrize("cell, layers", CASES)
def test_every_cell_and_depth_passes_the_export_gate(tmp_path, cell, layers):
    from estella.build.model import state_layout
    from estella.build.random_run import make_random_run
    from estella.export.pipeline import export_run
    from estella.runtime.backends import open_backend
    from estella.runtime.manifest import load_manifest

    units = UNITS[layers]
    run = make_random_run(str(tmp_path / "run"), CHARS, embedding_dim=12, units=units, cell=cell, seed=layers)
    export_run(run, str(tmp_path / "export"), log=lambda *a: None)  # raises ParityError unless every artifact passes

    manifest = load_manifest(str(tmp_path / "export"))
    assert manifest["model"]["cell"] == cell and [layer["units"] for layer in manifest["model"]["layers"]] == units
    assert manifest["state"]["layout"] == state_layout(cell, units)
    left_out = manifest["parity"]["left_out"]  # only the optional microcontroller file may fail its gate
    assert set(left_out) <= {"tflite-int8-full"}
    assert {name: numbers["passed"] for name, numbers in manifest["parity"]["artifacts"].items()} == {
        spec.name: True for spec in ARTIFACTS if spec.name not in left_out}
    S = manifest["model"]["state_size"]
    for spec in [spec for spec in ARTIFACTS if spec.name not in left_out]:
        backend = open_backend(str(tmp_path / "export"), spec.format, spec.precision)
        assert backend.state_size == S == (2 if cell == "lstm" else 1) * sum(units)
