"""Files named by an export are opened once and checked on the descriptor: a file swapped for a link
to an outside file, at any moment, is either the verified file or refused, with nothing said about
the outside file, and never an uncaught OSError."""

import os
import shutil
import threading

import pytest

from estella.runtime.errors import EstellaError
from estella.runtime.manifest import load_manifest, verify_files
from estella.runtime.untrusted_files import FileOutside, NotRegular, TooLarge, read_file

SWAPS = 3000  # bounded in count, not in time: the race is the same on a fast or a loaded machine


@pytest.fixture
def export_copy(numpy_export, tmp_path):
    return str(shutil.copytree(numpy_export, tmp_path / "export"))


def test_a_file_swapped_for_a_link_while_it_is_verified(export_copy, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"s3cret" * 2221)  # 13326 bytes: a size that must never be printed
    weights = os.path.join(export_copy, "weights.npz")
    good = os.path.join(export_copy, "good.tmp")
    shutil.copy(weights, good)
    manifest = load_manifest(export_copy)
    artifact = manifest["artifacts"][0]
    expected = open(weights, "rb").read()
    swapping = threading.Event()
    swapping.set()

    def swap():
        for i in range(SWAPS):
            name = os.path.join(export_copy, f"swap{i % 2}.tmp")
            if i % 2:
                shutil.copy(good, name)
            else:
                os.symlink(str(secret), name)
            os.replace(name, weights)  # atomic: the name always exists, as a file or as a link
        swapping.clear()

    thread = threading.Thread(target=swap)
    thread.start()
    outcomes = {"verified": 0, "refused": 0}
    try:
        while swapping.is_set() or outcomes["verified"] + outcomes["refused"] < 50:
            try:
                kept = verify_files(export_copy, artifact, keep=["weights.npz"])
            except EstellaError as e:
                message = str(e)
                assert "13326" not in message and "s3cret" not in message and str(secret) not in message, message
                outcomes["refused"] += 1
            else:
                assert kept["weights.npz"] == expected  # what was hashed is the good file
                outcomes["verified"] += 1
    finally:
        thread.join()
    assert outcomes["refused"] > 0 and outcomes["verified"] + outcomes["refused"] >= 50, outcomes


def test_a_link_out_of_the_folder_is_refused_on_the_descriptor(tmp_path):
    folder, outside = tmp_path / "folder", tmp_path / "outside.txt"
    folder.mkdir()
    outside.write_text("x" * 777)
    (folder / "inside.txt").write_text("ok")
    os.symlink(outside, folder / "link.txt")
    os.symlink("inside.txt", folder / "good_link.txt")
    assert read_file(str(folder / "good_link.txt"), root=str(folder))[0] == b"ok"
    with pytest.raises(FileOutside) as info:
        read_file(str(folder / "link.txt"), root=str(folder))
    assert "777" not in str(info.value)
    os.mkdir(folder / "sub")
    os.mkfifo(folder / "sub" / "fifo")
    with pytest.raises(NotRegular):  # opened without blocking: a FIFO never hangs the reader
        read_file(str(folder / "sub" / "fifo"), root=str(folder))


def test_a_loop_of_links_is_a_refusal(tmp_path):
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(EstellaError):
        read_file(str(tmp_path / "a"), root=str(tmp_path))


def test_a_size_limit_is_checked_before_reading(tmp_path):
    sparse = tmp_path / "sparse.txt"
    with open(sparse, "wb") as f:
        f.truncate(200 << 30)  # 200 GB, sparse: reading it would be a MemoryError
    with pytest.raises(TooLarge, match="larger than"):
        read_file(str(sparse), max_bytes=1 << 20)


def test_a_huge_sparse_artifact_is_refused_unread(export_copy, capsys):
    """A 200 GB sparse weights.npz whose size the manifest lists: refused before a byte is read."""
    import json

    from estella.runtime.cli import main

    path = os.path.join(export_copy, "weights.npz")
    with open(path, "r+b") as f:
        f.truncate(200 << 30)
    manifest_path = os.path.join(export_copy, "manifest.json")
    manifest = json.load(open(manifest_path))
    manifest["artifacts"][0]["files"][0]["bytes"] = 200 << 30
    json.dump(manifest, open(manifest_path, "w"))
    for argv in (["generate", export_copy, "--chars", "3"], ["inspect", export_copy]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "refused unread" in err and "MemoryError" not in err and "Traceback" not in err
