"""Bad input: estella-c refuses it with the Python CLI's own message and exit code 2."""

import json
import os
import shutil
import subprocess

import pytest

from estella.runtime.cli import main


def python_error(capsys, argv):
    """(exit code, the message after "error: ") of `estella generate ... --backend tflite`."""
    try:
        code = main(["generate", *argv, "--backend", "tflite"])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()[-1]
    # argparse names the parser that refused: the command's, or the top one for unknown flags
    prefix = next((p for p in ("estella generate: error: ", "estella: error: ") if err.startswith(p)), None)
    assert prefix, err
    return code, err[len(prefix):]


def c_error(estella_c, argv):
    done = subprocess.run([estella_c, *argv], capture_output=True, text=True, encoding="utf-8")
    lines = done.stderr.strip().splitlines()
    prefix = "estella-c: error: "
    assert done.stdout == "" and len(lines) == 1 and lines[0].startswith(prefix), done.stderr
    return done.returncode, lines[0][len(prefix):]


def assert_same_refusal(capsys, estella_c, argv):
    code, message = python_error(capsys, argv)
    assert code == 2
    assert c_error(estella_c, argv) == (2, message)


@pytest.mark.parametrize("flags", [
    ["--chars", "abc"],
    ["--chars", "1.5"],
    ["--chars", "-5"],
    ["--temperature", "-1"],
    ["--temperature", "nan"],
    ["--temperature", "inf"],
    ["--temperature", "warm"],
    ["--temperature", "1e-05", "--top-k", "0"],
    ["--top-k", "-3"],
    ["--top-p", "1.5"],
    ["--top-p", "0"],
    ["--seed", "-1"],
    ["--seed", "9223372036854775808"],
    ["--top-k", "9" * 87],
    ["--chars", str(2**63)],
    ["--seed", "x7"],
    ["--prime", "Pip#@é"],
    ["--chars"],
    ["--top", "3"],
    ["--precision", "int4"],
    ["--frobnicate"],
], ids=lambda flags: " ".join(flags))
def test_bad_flags(capsys, estella_c, real_export, flags):
    assert_same_refusal(capsys, estella_c, [real_export, *flags])


def test_missing_export(capsys, estella_c, tmp_path):
    assert_same_refusal(capsys, estella_c, [str(tmp_path / "nowhere"), "--chars", "5"])


def test_folder_without_manifest(capsys, estella_c, tmp_path):
    assert_same_refusal(capsys, estella_c, [str(tmp_path), "--chars", "5"])


@pytest.fixture
def copied_export(real_export, tmp_path):
    export = str(tmp_path / "export")
    shutil.copytree(real_export, export)
    return export


def test_tampered_model(capsys, estella_c, copied_export):
    path = os.path.join(copied_export, "model.tflite")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))
    assert_same_refusal(capsys, estella_c, [copied_export, "--chars", "5"])


def test_truncated_model(capsys, estella_c, copied_export):
    path = os.path.join(copied_export, "model.tflite")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-10])
    assert_same_refusal(capsys, estella_c, [copied_export, "--chars", "5"])


def test_missing_model(capsys, estella_c, copied_export):
    os.remove(os.path.join(copied_export, "model.tflite"))
    assert_same_refusal(capsys, estella_c, [copied_export, "--chars", "5"])


def test_manifest_path_outside_the_folder(capsys, estella_c, copied_export):
    path = os.path.join(copied_export, "manifest.json")
    manifest = json.load(open(path))
    tflite = next(a for a in manifest["artifacts"] if a["format"] == "tflite" and a["precision"] == "float32")
    tflite["path"] = tflite["files"][0]["path"] = "../model.tflite"
    json.dump(manifest, open(path, "w"))
    assert_same_refusal(capsys, estella_c, [copied_export, "--chars", "5"])


def test_unfinished_export(capsys, estella_c, copied_export):
    open(os.path.join(copied_export, "INCOMPLETE"), "w").close()
    assert_same_refusal(capsys, estella_c, [copied_export, "--chars", "5"])


def test_unsupported_flag_is_named(estella_c, real_export):
    code, message = c_error(estella_c, [real_export, "--num-samples", "2"])
    assert code == 2 and message == "--num-samples is not supported by estella-c (use `estella generate`)"


def test_a_full_disk_is_reported(estella_c, real_export):
    """stdout on /dev/full: both say so with exit 2 (the Python CLI run as a process, as here)."""
    import sys

    argv = [real_export, "--chars", "3000", "--seed", "1"]
    with open("/dev/full", "w") as full:
        c = subprocess.run([estella_c, *argv], stdout=full, stderr=subprocess.PIPE, text=True)
        py = subprocess.run([sys.executable, "-m", "estella.runtime.cli", "generate", *argv, "--backend", "tflite"],
                            stdout=full, stderr=subprocess.PIPE, text=True)
    assert c.returncode == py.returncode == 2
    assert c.stderr.strip().splitlines()[-1].split(": error: ")[1] == py.stderr.strip().splitlines()[-1].split(": error: ")[1]


def test_control_characters_in_a_refusal_are_escaped(estella_c, tmp_path):
    """A path (or anything an export names) cannot drive the terminal: ESC and a bidi override are shown as escapes."""
    folder = tmp_path / "x\x1b[2Jy\u202ez"
    folder.mkdir()
    code, message = c_error(estella_c, [str(folder)])
    assert code == 2 and "\x1b" not in message and "\u202e" not in message
    assert "x\\x1b[2Jy\\u202ez/manifest.json is missing" in message


def test_a_model_linked_outside_the_folder(capsys, estella_c, copied_export, tmp_path):
    outside = tmp_path / "elsewhere.tflite"
    os.rename(os.path.join(copied_export, "model.tflite"), outside)
    os.symlink(outside, os.path.join(copied_export, "model.tflite"))
    assert_same_refusal(capsys, estella_c, [copied_export, "--chars", "5"])


def test_a_manifest_that_is_a_fifo(capsys, estella_c, copied_export):
    os.remove(os.path.join(copied_export, "manifest.json"))
    os.mkfifo(os.path.join(copied_export, "manifest.json"))
    assert_same_refusal(capsys, estella_c, [copied_export, "--chars", "5"])
