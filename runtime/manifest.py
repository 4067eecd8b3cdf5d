"""Read an export directory's manifest.json, check it, and verify its files (see export/FORMAT.md).

The manifest is untrusted input: an export folder may come from anywhere. Before any file is
opened, its structure is checked (one error naming the field), and every path in it must be
relative, resolve (symlinks followed) inside the export folder and name a regular file. A refusal
never says anything about a file outside the folder beyond the path the manifest itself gives.
"""

import json
import os
import re
import stat

from .errors import EstellaError
from .untrusted_files import FileMissing, FileOutside, NotRegular, UntrustedFileError, file_sha256, read_file  # noqa: F401 (file_sha256: for export)
from .weights_format import GATES, MAX_LAYERS, STATE_PARTS

SCHEMA_VERSION = 2  # what `estella export` writes
SCHEMA_VERSIONS = (1, 2)  # what this runtime reads: a schema-1 manifest reads as a one-layer GRU
MANIFEST = "manifest.json"
# `estella export` builds its folder under this prefix and renames it when done; a marker file of
# this name means the same. Either way the folder is unfinished (a killed export) and never loaded.
UNFINISHED_PREFIX = ".export-tmp-"
UNFINISHED_MARKER = "INCOMPLETE"
MAX_FILE_BYTES = 2 << 30  # the largest model estella trains has artifacts of a few hundred MB
MAX_MANIFEST_BYTES = 32 << 20  # a real one is a few KB; this only stops reading a huge file into memory
SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(EstellaError):
    """The export directory or its manifest is missing, unreadable, malformed, or of an unknown schema."""


class ChecksumError(EstellaError):
    """A file listed in the manifest is missing, truncated, or has other bytes than were exported."""


class UnsafePathError(ManifestError):
    """A path in the manifest leaves the export folder, or names something that is not a regular file."""


def load_manifest(export_dir, verify=True) -> dict:
    """Return the checked manifest as a dict; with verify, also the size and sha256 of every listed file."""
    check_finished(export_dir)
    path = os.path.join(export_dir, MANIFEST)
    if not os.path.lexists(path):
        hint = (f" but a training run: export it with `estella export {export_dir} --out DIR`"
                if os.path.isfile(os.path.join(export_dir, "config.json")) else "")
        raise ManifestError(f"{path} is missing: {export_dir} is not an estella export directory{hint}")
    try:
        raw, _ = read_file(path, root=export_dir, what=path, max_bytes=MAX_MANIFEST_BYTES)
        manifest = json.loads(raw.decode("utf-8"))
    except UntrustedFileError as e:
        raise _refusal(e, path, export_dir) from None
    except (ValueError, RecursionError) as e:
        raise ManifestError(f"cannot read {path}: {e}") from None
    manifest = check_manifest(manifest, path)
    for artifact in manifest["artifacts"]:
        check_artifact_paths(export_dir, artifact)
    if verify:
        for artifact in manifest["artifacts"]:
            verify_files(export_dir, artifact)
    return manifest


def check_finished(export_dir):
    """Refuse a folder that does not exist, or that a killed `estella export` left unfinished."""
    if not os.path.isdir(export_dir):
        raise ManifestError(f"export directory {export_dir} does not exist (write one with `estella export RUN --out DIR`)")
    names = {os.path.basename(os.path.abspath(export_dir)), os.path.basename(os.path.realpath(export_dir))}
    if any(n.startswith(UNFINISHED_PREFIX) for n in names) or os.path.lexists(os.path.join(export_dir, UNFINISHED_MARKER)):
        raise ManifestError(f"{export_dir} is an unfinished export (the temporary folder of an `estella export` that "
                            "was killed or failed): it is never loaded; run `estella export` again")


# --- structure: every field the runtime reads has the type it expects ----------------------------

def check_manifest(manifest, where=MANIFEST) -> dict:
    """Raise ManifestError naming the first field that is missing or has the wrong type or value.

    Returns the manifest in schema 2's terms: a schema-1 manifest comes back as a copy with
    model.cell, model.layers, model.state_size and state.layout filled in (a one-layer GRU)."""
    def fail(field, what):
        raise ManifestError(f"{where}: {field} {what}")

    if not isinstance(manifest, dict):
        raise ManifestError(f"{where}: the manifest must be a JSON object, got {type(manifest).__name__}")
    version = manifest.get("schema_version")
    if version not in SCHEMA_VERSIONS or isinstance(version, bool):
        raise ManifestError(f"{where} has schema_version {version!r}; this runtime reads versions "
                            f"{', '.join(map(str, SCHEMA_VERSIONS))} (upgrade estella, or re-export with this version)")
    for key, kind in (("model", dict), ("artifacts", list)):
        if key not in manifest:
            raise ManifestError(f"{where} has no {key!r} section")
        if not isinstance(manifest[key], kind):
            fail(key, f"must be a JSON {'object' if kind is dict else 'list'}, got {type(manifest[key]).__name__}")
    for key in ("state", "parity", "provenance"):  # optional; what inspect and evaluate read
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            fail(key, f"must be a JSON object or null, got {type(manifest[key]).__name__}")
    model = manifest["model"]
    vocab = model.get("vocab")
    if not isinstance(vocab, list):
        raise ManifestError(f"{where} has no model.vocab list")
    bad = [v for v in vocab if not (isinstance(v, str) and len(v) == 1)]
    if bad:
        fail("model.vocab", f"must hold single characters, got {bad[0]!r}")
    if len(set(vocab)) != len(vocab):
        dupes = sorted({v for v in vocab if vocab.count(v) > 1})
        fail("model.vocab", f"has characters more than once: {dupes!r}")
    for key in ("vocab_size", "units" if version == 1 else "state_size"):
        if not _positive_int(model.get(key)):
            fail(f"model.{key}", f"must be an integer >= 1, got {model.get(key)!r}")
    if "embedding_dim" in model and not _positive_int(model["embedding_dim"]):
        fail("model.embedding_dim", f"must be an integer >= 1, got {model['embedding_dim']!r}")
    if model["vocab_size"] != len(vocab):
        fail("model.vocab_size", f"is {model['vocab_size']} but model.vocab has {len(vocab)} characters")
    if version == 1:
        manifest = schema1_as_schema2(manifest)
    else:
        _check_state(manifest, fail)
    for i, artifact in enumerate(manifest["artifacts"]):
        _check_artifact(artifact, f"artifacts[{i}]", fail, manifest["model"]["state_size"])
    return manifest


def schema1_as_schema2(manifest) -> dict:
    """A schema-1 manifest (one GRU of model.units) with schema 2's model and state fields added."""
    units = manifest["model"]["units"]
    model = {**manifest["model"], "cell": "gru", "layers": [{"name": "gru", "cell": "gru", "units": units}],
             "state_size": units}
    state = {**(manifest.get("state") if isinstance(manifest.get("state"), dict) else {}),
             "layout": [{"layer": 0, "cell": "gru", "part": "h", "offset": 0, "size": units}]}
    return {**manifest, "model": model, "state": state}


def _check_state(manifest, fail):
    """Schema 2: model.cell and model.layers, and a state.layout that is contiguous from 0, has each
    layer's parts in order with that layer's units, and sums to model.state_size."""
    model = manifest["model"]
    cell = model.get("cell")
    if not isinstance(cell, str) or cell not in GATES:
        fail("model.cell", f"must be one of {', '.join(GATES)}, got {cell!r}")
    layers = model.get("layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_LAYERS:
        fail("model.layers", f"must be a list of 1 to {MAX_LAYERS} layers, got {layers!r}")
    for k, layer in enumerate(layers):
        if not isinstance(layer, dict) or layer.get("cell") != cell or not _positive_int(layer.get("units")):
            fail(f"model.layers[{k}]", f"must be {{name, cell: {cell!r}, units >= 1}}, got {layer!r}")
    state = manifest.get("state")
    layout = state.get("layout") if isinstance(state, dict) else None
    if not isinstance(layout, list) or not layout:
        fail("state.layout", f"must be a non-empty list of state parts, got {layout!r}")
    expected = [(k, cell, part, layer["units"]) for k, layer in enumerate(layers) for part in STATE_PARTS[cell]]
    offset = 0
    for i, part in enumerate(layout):
        if not isinstance(part, dict):
            fail(f"state.layout[{i}]", f"must be a JSON object, got {part!r}")
        if part.get("offset") != offset:
            fail(f"state.layout[{i}].offset", f"is {part.get('offset')!r}; the layout must be contiguous from 0, so it "
                                              f"must be {offset}")
        if i >= len(expected):
            fail("state.layout", f"has {len(layout)} parts but model.layers ({len(layers)} {cell}) has {len(expected)}")
        got = (part.get("layer"), part.get("cell"), part.get("part"), part.get("size"))
        if got != expected[i]:
            fail(f"state.layout[{i}]", f"is (layer, cell, part, size) = {got}, but model.layers says {expected[i]}")
        offset += part["size"]
    if len(layout) != len(expected):
        fail("state.layout", f"has {len(layout)} parts but model.layers ({len(layers)} {cell}) has {len(expected)}")
    if offset != model["state_size"]:
        fail("model.state_size", f"is {model['state_size']} but state.layout's parts add up to {offset}")


def _check_artifact(artifact, field, fail, state_size):
    if not isinstance(artifact, dict):
        fail(field, f"must be a JSON object, got {type(artifact).__name__}")
    for key in ("name", "format", "precision", "path"):
        if not isinstance(artifact.get(key), str) or not artifact[key]:
            fail(f"{field}.{key}", f"must be a non-empty string, got {artifact.get(key)!r}")
    field = f"{field} ({artifact['name']})"
    if not isinstance(artifact.get("role", "step"), str):
        fail(f"{field}.role", f"must be a string, got {artifact['role']!r}")
    for key in ("batch", "time"):
        value = artifact.get(key)
        if value is not None and not _positive_int(value):
            fail(f"{field}.{key}", f"must be an integer >= 1 or null, got {value!r}")
    check_relative(artifact["path"], f"{field}.path")
    files = artifact.get("files")
    if not isinstance(files, list) or not files:
        fail(f"{field}.files", f"must be a non-empty list of files, got {files!r}")
    for j, entry in enumerate(files):
        where = f"{field}.files[{j}]"
        if not isinstance(entry, dict):
            fail(where, f"must be a JSON object, got {type(entry).__name__}")
        if not isinstance(entry.get("path"), str):
            fail(f"{where}.path", f"must be a string, got {entry.get('path')!r}")
        check_relative(entry["path"], f"{where}.path")
        size = entry.get("bytes")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            fail(f"{where}.bytes", f"must be an integer >= 0, got {size!r}")
        if not isinstance(entry.get("sha256"), str) or not SHA256.fullmatch(entry["sha256"]):
            fail(f"{where}.sha256", f"must be 64 lowercase hex digits, got {entry.get('sha256')!r}")
    for key in ("inputs", "outputs"):  # optional: what inspect prints
        specs = artifact.get(key)
        if specs is None:
            continue
        if not isinstance(specs, list) or not all(
                isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("dtype"), str)
                and isinstance(s.get("shape"), list) for s in specs):
            fail(f"{field}.{key}", "must be a list of {name, shape, dtype} objects")
        for spec in specs:  # the state width the artifact declares is the layout's
            width = spec["shape"][-1] if spec["name"] in ("state", "new_state") and spec["shape"] else None
            if width is not None and width != state_size:
                fail(f"{field}.{key} {spec['name']}", f"has width {width!r} but model.state_size (the sum of "
                                                      f"state.layout) is {state_size}")


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


# --- paths: confined to the export folder, regular files, each one listed ------------------------

def check_relative(path, field):
    """A manifest path is relative and, taken as written, stays inside the folder (no "..", no "/x")."""
    parts = path.replace("\\", "/").split("/")
    if (os.path.isabs(path) or path.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts
            or "\0" in path or path in ("", ".")):
        raise UnsafePathError(f"{MANIFEST}: {field} {path!r} must be a relative path inside the export folder")


def check_path(export_dir, path, what):
    """Refuse a path that resolves (symlinks followed) outside export_dir, or that exists and is not a
    regular file (a FIFO would hang the reader, a device never ends). Nothing is opened here."""
    root, full = _resolved(export_dir, path, what)
    if os.path.commonpath([root, full]) != root:
        raise UnsafePathError(f"{what} {path!r} points outside the export folder {export_dir}: refused")
    if os.path.lexists(os.path.join(export_dir, path)):
        try:
            mode = os.stat(full).st_mode
        except OSError:
            return  # a dangling link inside the folder: reported as missing when it is verified
        if not stat.S_ISREG(mode):
            raise UnsafePathError(f"{what} {path!r} in {export_dir} is not a regular file: refused")


def check_artifact_paths(export_dir, artifact):
    """Every listed file confined and regular; the artifact's `path` among them (a file) or holding
    exactly the listed files under it (a folder, such as a SavedModel), so that nothing it loads is unverified."""
    name = artifact["name"]
    listed = {os.path.normpath(entry["path"]) for entry in artifact["files"]}
    for entry in artifact["files"]:
        check_path(export_dir, entry["path"], f"artifact {name!r}: file")
    path = artifact["path"]
    root, full = _resolved(export_dir, path, f"artifact {name!r}: path")
    if os.path.commonpath([root, full]) != root:
        raise UnsafePathError(f"artifact {name!r}: path {path!r} points outside the export folder {export_dir}: refused")
    if os.path.isdir(full):
        found = set()
        for folder, dirs, files in os.walk(full, onerror=_walk_error):
            for d in dirs:
                if os.path.islink(os.path.join(folder, d)):
                    raise UnsafePathError(f"artifact {name!r}: {os.path.relpath(os.path.join(folder, d), export_dir)!r} "
                                          "is a link to a folder; a folder artifact holds plain files only")
            found |= {os.path.normpath(os.path.relpath(os.path.join(folder, f), root)) for f in files}
        unlisted = sorted(found - listed)
        if unlisted:
            raise ChecksumError(f"artifact {name!r}: {path}/ holds files that the manifest does not list "
                                f"({', '.join(unlisted[:5])}); they would be loaded unverified: re-export it")
    elif os.path.normpath(path) not in listed:
        raise ChecksumError(f"artifact {name!r}: its path {path!r} is not in its files list, so it cannot be "
                            "verified: the manifest was edited; re-export it")
    else:
        check_path(export_dir, path, f"artifact {name!r}: path")


def verify_files(export_dir, artifact, keep=()) -> dict:
    """Raise unless every file of the artifact is confined, regular, and has the size and sha256 the
    manifest lists. Returns {path: bytes} for the paths in `keep`, read once: what was hashed is what
    the caller loads, with no window for the file to change in between."""
    check_artifact_paths(export_dir, artifact)
    kept, keep = {}, {os.path.normpath(k) for k in keep}
    for entry in artifact["files"]:
        path = os.path.join(export_dir, entry["path"])
        keep_it = os.path.normpath(entry["path"]) in keep
        if entry["bytes"] > MAX_FILE_BYTES:
            raise ChecksumError(f"{path} is listed at {entry['bytes']} bytes, more than the {MAX_FILE_BYTES >> 30} GB "
                                "that any estella artifact file holds: refused unread")
        try:
            data, digest = read_file(path, root=export_dir, what=path, size=entry["bytes"], keep=keep_it)
        except FileMissing:
            raise ChecksumError(f"{path} is missing (listed in the manifest for artifact {artifact['name']!r})") from None
        except UntrustedFileError as e:
            raise _refusal(e, path, export_dir) from None
        if digest != entry["sha256"]:
            raise ChecksumError(f"{path} does not match its sha256 in the manifest: the file is corrupt "
                                "or was changed after export; re-export it")
        if keep_it:
            kept[os.path.normpath(entry["path"])] = data
    return kept


def _refusal(error, path, export_dir):
    """The manifest's error for a file that failed a check: it names the path, never what lies outside."""
    if isinstance(error, FileOutside):
        return UnsafePathError(f"{path} points outside the export folder {export_dir}: refused")
    if isinstance(error, NotRegular):
        return UnsafePathError(f"{path} is not a regular file: refused")
    if isinstance(error, FileMissing):
        return ManifestError(f"{path} is missing")
    return ChecksumError(f"{error}; re-export it")


def _resolved(export_dir, path, what):
    """(real root, real path): a link loop, or a link swapped while it is resolved, is a refusal."""
    try:
        return os.path.realpath(export_dir), os.path.realpath(os.path.join(export_dir, path))
    except (OSError, ValueError):
        raise UnsafePathError(f"{what} {path!r} in {export_dir} cannot be resolved: refused") from None


def _walk_error(error):
    raise UnsafePathError(f"cannot list {error.filename}: refused")
