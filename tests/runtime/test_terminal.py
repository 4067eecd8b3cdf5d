"""What `inspect`, `evaluate` and the errors print from an export reaches the terminal with its control
characters visible, on any terminal; a stdout that is full, closed or ASCII-only is exit 2 with a
message or escaped text, never a traceback. Real processes where the file descriptor matters."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from estella.runtime.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ESTELLA = [sys.executable, "-m", "estella.runtime.cli"]
CLEAR = "\x1b[2J"


@pytest.fixture
def crafted(numpy_export, tmp_path):
    """The numpy export with a screen-clearing artifact name and provenance, and non-ASCII text."""
    folder = str(shutil.copytree(numpy_export, tmp_path / "export"))
    path = os.path.join(folder, "manifest.json")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    manifest["artifacts"][0]["name"] = f"numpy{CLEAR}-float32"
    manifest["kind"] = "estella.char-gru\u202e"
    manifest["provenance"] = {"run": f"/runs/{CLEAR}x\nforged: line", "note": "caf\u00e9 \u2603"}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return folder


def test_inspect_shows_control_characters_as_escapes(crafted, capsys):
    assert main(["inspect", crafted]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "\nforged: line" not in out
    assert "numpy\\x1b[2J-float32" in out and "\\x1b[2Jx\\x0aforged: line" in out and "\\u202e" in out


def test_errors_show_control_characters_as_escapes(crafted, capsys):
    os.remove(os.path.join(crafted, "weights.npz"))
    for argv in (["generate", crafted, "--chars", "3"], ["inspect", crafted]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "\x1b" not in err and "numpy\\x1b[2J-float32" in err, err


@pytest.mark.parametrize("command", ["inspect", "evaluate"])
def test_an_ascii_only_terminal_gets_escapes(crafted, tmp_path, command):
    text = tmp_path / "text.txt"
    text.write_text("Pip and Joe. " * 10)
    argv = [crafted] if command == "inspect" else [crafted, "--text", str(text)]
    env = {**os.environ, "LANG": "C", "LC_ALL": "C", "PYTHONIOENCODING": "ascii", "PYTHONUTF8": "0"}
    result = subprocess.run([*ESTELLA, command, *argv], capture_output=True, cwd=REPO, timeout=120, env=env)
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr.decode()
    if command == "inspect":
        assert b"caf\\xe9 \\u2603" in result.stdout


@pytest.mark.parametrize("command", ["inspect", "evaluate"])
def test_a_full_disk_is_exit_2(crafted, tmp_path, command):
    text = tmp_path / "text.txt"
    text.write_text("Pip and Joe. " * 10)
    argv = [crafted] if command == "inspect" else [crafted, "--text", str(text)]
    with open("/dev/full", "w") as full:
        result = subprocess.run([*ESTELLA, command, *argv], stdout=full, stderr=subprocess.PIPE, text=True,
                                cwd=REPO, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "No space left on device" in result.stderr and "Traceback" not in result.stderr
    assert "Exception ignored" not in result.stderr


@pytest.mark.parametrize("command", ["inspect", "evaluate", "generate"])
def test_a_closed_stdout_is_exit_2(crafted, tmp_path, command):
    text = tmp_path / "text.txt"
    text.write_text("Pip and Joe. " * 10)
    argv = {"inspect": [crafted], "evaluate": [crafted, "--text", str(text)],
            "generate": [crafted, "--chars", "5"]}[command]
    line = " ".join(map(_quote, [*ESTELLA, command, *argv])) + " >&-"
    result = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and "standard output is closed" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def _quote(arg):
    import shlex

    return shlex.quote(str(arg))
