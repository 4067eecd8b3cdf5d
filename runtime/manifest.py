"""Read an export directory's manifest.json and verify its files (see export/FORMAT.md)."""

import hashlib
import json
import os

from .errors import EstellaError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class ManifestError(EstellaError):
    """The export directory or its manifest is missing, unreadable, or of an unknown schema."""


class ChecksumError(EstellaError):
    """A file listed in the manifest is missing, truncated, or has other bytes than were exported."""


def load_manifest(export_dir, verify=True) -> dict:
    """Return the manifest as a dict; with verify, check the size and sha256 of every listed file."""
    if not os.path.isdir(export_dir):
        raise ManifestError(f"export directory {export_dir} does not exist (write one with `estella export RUN --out DIR`)")
    path = os.path.join(export_dir, MANIFEST)
    if not os.path.isfile(path):
        hint = (f" but a training run: export it with `estella export {export_dir} --out DIR`"
                if os.path.isfile(os.path.join(export_dir, "config.json")) else "")
        raise ManifestError(f"{path} is missing: {export_dir} is not an estella export directory{hint}")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise ManifestError(f"cannot read {path}: {e}") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise ManifestError(f"{path} has schema_version {version!r}; this runtime reads version {SCHEMA_VERSION} "
                            "(upgrade estella, or re-export with this version)")
    for key in ("model", "artifacts"):
        if key not in manifest:
            raise ManifestError(f"{path} has no {key!r} section")
    if not isinstance(manifest["model"].get("vocab"), list):
        raise ManifestError(f"{path} has no model.vocab list")
    if verify:
        for artifact in manifest["artifacts"]:
            verify_files(export_dir, artifact)
    return manifest


def verify_files(export_dir, artifact):
    """Raise ChecksumError unless every file of the artifact has the size and sha256 the manifest lists."""
    for entry in artifact.get("files", []):
        path = os.path.join(export_dir, entry["path"])
        if not os.path.isfile(path):
            raise ChecksumError(f"{path} is missing (listed in the manifest for artifact {artifact['name']!r})")
        size = os.path.getsize(path)
        if size != entry["bytes"]:
            raise ChecksumError(f"{path} is {size} bytes but the manifest lists {entry['bytes']}: "
                                "the file is truncated or was replaced; re-export it")
        if file_sha256(path) != entry["sha256"]:
            raise ChecksumError(f"{path} does not match its sha256 in the manifest: the file is corrupt "
                                "or was changed after export; re-export it")


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
