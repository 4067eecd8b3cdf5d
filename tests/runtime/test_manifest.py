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
