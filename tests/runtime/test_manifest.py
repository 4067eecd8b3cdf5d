"""Loading an export: the manifest's schema and every file's size and sha256 are checked before use."""

import json
import os
import shutil

import pytest

from estella.runtime.backends import open_backend
from estella.runtime.errors import EstellaError
from estella.runtime.manifest import ChecksumError, ManifestError, load_manifest


@pytest.fixture
def export_copy(numpy_export, tmp_path):
    return shutil.copytree(numpy_export, tmp_path / "export")


def test_a_good_export_loads_and_verifies(numpy_export):
    manifest = load_manifest(numpy_export)
    assert manifest["schema_version"] == 1
    assert [a["format"] for a in manifest["artifacts"]] == ["numpy"]


def test_missing_directory(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(str(tmp_path / "nowhere"))


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="manifest.json is missing"):
        load_manifest(str(tmp_path))


def test_unknown_schema_version(export_copy):
    path = export_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["schema_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="schema_version 99"):
        load_manifest(str(export_copy))


def test_unreadable_manifest(export_copy):
    (export_copy / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(str(export_copy))


def test_checksum_mismatch_is_refused_before_use(export_copy):
    path = export_copy / "weights.npz"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # same size, other bytes
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="sha256"):
        load_manifest(str(export_copy))
    with pytest.raises(ChecksumError, match="weights.npz"):
        open_backend(str(export_copy), "numpy")


def test_truncated_file(export_copy):
    path = export_copy / "weights.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ChecksumError, match="truncated"):
        open_backend(str(export_copy), "numpy")


def test_missing_artifact_file(export_copy):
    os.remove(export_copy / "weights.npz")
    with pytest.raises(ChecksumError, match="missing"):
        load_manifest(str(export_copy))


def test_errors_are_estella_errors():
    assert issubclass(ManifestError, EstellaError) and issubclass(ChecksumError, EstellaError)


def test_manifest_without_vocabulary(export_copy):
    path = export_copy / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["model"]["vocab"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="model.vocab"):
        load_manifest(str(export_copy))


def _edited(folder, tmp_path, change):
    copy = shutil.copytree(folder, tmp_path / "edited")
    path = copy / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    return str(copy)


def test_a_schema1_manifest_reads_as_a_one_layer_gru(numpy_export):
    manifest = load_manifest(numpy_export)
    units = manifest["model"]["units"]
    assert manifest["model"]["cell"] == "gru" and manifest["model"]["state_size"] == units
    assert manifest["model"]["layers"] == [{"name": "gru", "cell": "gru", "units": units}]
    assert manifest["state"]["layout"] == [{"layer": 0, "cell": "gru", "part": "h", "offset": 0, "size": units}]


def test_a_schema2_manifest_loads_with_its_layout(lstm_export):
    manifest = load_manifest(lstm_export)
    assert manifest["schema_version"] == 2 and manifest["model"]["state_size"] == 56
    assert [(p["layer"], p["part"], p["offset"]) for p in manifest["state"]["layout"]] == [
        (0, "h", 0), (0, "c", 16), (1, "h", 32), (1, "c", 44)]
    assert open_backend(lstm_export, "numpy").state_size == 56


def _set_part(i, key, value):
    return lambda m: m["state"]["layout"][i].__setitem__(key, value)


@pytest.mark.parametrize("change, message", [
    (_set_part(1, "offset", 17), "state.layout[1].offset is 17; the layout must be contiguous from 0, so it must be 16"),
    (_set_part(0, "offset", 1), "state.layout[0].offset is 1; the layout must be contiguous from 0"),
    (_set_part(2, "size", 16), "state.layout[2] is (layer, cell, part, size) = (1, 'lstm', 'h', 16), but model.layers "
                               "says (1, 'lstm', 'h', 12)"),
    (_set_part(1, "part", "h"), "state.layout[1] is (layer, cell, part, size) = (0, 'lstm', 'h', 16)"),
    (lambda m: m["state"]["layout"].pop(), "state.layout has 3 parts but model.layers (2 lstm) has 4"),
    (lambda m: m["state"].pop("layout"), "state.layout must be a non-empty list"),
    (lambda m: m["model"].__setitem__("state_size", 57), "model.state_size is 57 but state.layout's parts add up to 56"),
    (lambda m: m["model"].__setitem__("cell", "rnn"), "model.cell must be one of gru, lstm, got 'rnn'"),
    (lambda m: m["model"].__setitem__("cell", ["lstm"]), "model.cell must be one of gru, lstm, got ['lstm']"),
    (lambda m: m["model"]["layers"][1].__setitem__("cell", "gru"), "model.layers[1] must be {name, cell: 'lstm'"),
    (lambda m: m["model"].__setitem__("layers", []), "model.layers must be a list of 1 to 4 layers"),
])
def test_a_layout_that_disagrees_with_the_layers_is_refused(lstm_export, tmp_path, change, message):
    with pytest.raises(ManifestError) as e:
        load_manifest(_edited(lstm_export, tmp_path, change), verify=False)
    assert message in str(e.value)


def test_an_artifact_declaring_another_state_width_is_refused_at_load(lstm_export, tmp_path):
    def wider(m):
        m["artifacts"][0]["inputs"][1]["shape"] = ["batch", 57]
    with pytest.raises(ManifestError, match=r"artifacts\[0\] \(numpy-float32\).inputs state has width 57 but "
                                            r"model.state_size \(the sum of state.layout\) is 56"):
        load_manifest(_edited(lstm_export, tmp_path, wider), verify=False)


def test_numpy_weights_of_another_architecture_than_the_manifest_are_refused(lstm_export, tmp_path):
    """A consistent manifest (layers, layout, size) that does not describe the arrays in weights.npz."""
    def wider_second_layer(m):
        m["model"]["layers"][1]["units"] = 16
        for part in m["state"]["layout"][2:]:
            part["size"], part["offset"] = 16, part["offset"] + (part["part"] == "c") * 4
        m["model"]["state_size"] = 64
        for spec in m["artifacts"][0]["inputs"][1:] + m["artifacts"][0]["outputs"][1:]:
            spec["shape"][-1] = 64
    with pytest.raises(EstellaError, match=r"its arrays hold 2 lstm layers of \[16, 12\] units, but the manifest "
                                           r"says 2 lstm layers of \[16, 16\]"):
        open_backend(_edited(lstm_export, tmp_path, wider_second_layer), "numpy")
