import subprocess
import sys

import pytest

pytestmark = pytest.mark.tensorflow


def estella(*args):
    return subprocess.run([sys.executable, "-m", "estella.runtime.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args, message", [
    (["--corpus", "/no/such/file.txt"], "corpus file not found: /no/such/file.txt"),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--validation-fraction", "0.9"], "--validation-fraction must be in (0, 0.5), got 0.9"),
    (["--learning-rate", "-1"], "--learning-rate must be a finite number > 0, got -1.0"),
    (["--learning-rate", "inf"], "--learning-rate must be a finite number > 0, got inf"),
    (["--learning-rate", "nan"], "--learning-rate must be a finite number > 0, got nan"),
    (["--validation-fraction", "nan"], "--validation-fraction must be in (0, 0.5), got nan"),
    (["--seed", "-1"], "--seed must be in [0, 2**32), got -1"),
    (["--seed", str(2**64)], f"--seed must be in [0, 2**32), got {2**64}"),
])
def test_train_errors(args, message, tmp_path, corpus_slice):
    argv = ["train", str(tmp_path / "run"), "--preset", "tiny"]
    if "--corpus" not in args:
        argv += ["--corpus", corpus_slice]
    result = estella(*argv, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--corpus", "/no/such/file.txt"], "corpus file not found: /no/such/file.txt"),
    (["--data", "/no/such/folder"], "--data /no/such/folder is not a folder"),
    (["--units", "0"], "--units must be from 1 to 8192 per layer, got 0"),
    (["--cell", "lstm", "--layers", "5"], "--layers must be from 1 to 4, got 5"),
])
def test_cheap_checks_come_before_tensorflow_is_imported(args, message, tmp_path):
    code = ("import sys; from estella.runtime.cli import main; code = main(sys.argv[1:]); "
            "sys.exit(3 if 'keras' in sys.modules or 'tensorflow' in sys.modules else code)")
    result = subprocess.run([sys.executable, "-c", code, "train", str(tmp_path / "run"), *args],
                            capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr, (result.returncode, result.stderr[-2000:])


def test_unknown_preset_is_a_usage_error(tmp_path):
    result = estella("train", str(tmp_path / "run"), "--preset", "huge")
    assert result.returncode == 2 and "invalid choice: 'huge'" in result.stderr


def test_sample_writes_text_from_the_prime(tiny_run):
    result = estella("sample", tiny_run, "--prime", "Pip", "--chars", "40", "--seed", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout.rstrip("\n")
    assert text.startswith("Pip") and len(text) == 43
    again = estella("sample", tiny_run, "--prime", "Pip", "--chars", "40", "--seed", "3")
    assert again.stdout == result.stdout  # seeded


@pytest.mark.parametrize("args, message", [
    (["--prime", "Pip\u20ac"], "not in the vocabulary"),
    (["--prime", ""], "--prime must have at least one character"),
    (["--temperature", "-1"], "--temperature must be a finite number >= 0"),
    (["--chars", "-1"], "--chars must be >= 0"),
])
def test_sample_errors(tiny_run, args, message):
    result = estella("sample", tiny_run, *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_sample_on_a_folder_that_is_not_a_run(tmp_path):
    result = estella("sample", str(tmp_path))
    assert result.returncode == 2 and "is not a run directory" in result.stderr


def test_sample_and_generate_write_the_same_text(tiny_run, tmp_path, capsys):
    """One sampler: the Keras reference (`estella sample`) and the runtime (`estella generate`) draw
    the same characters from the same seed."""
    import shutil

    from estella.export.pipeline import export_run
    from estella.runtime.cli import main

    run = str(tmp_path / "run")
    shutil.copytree(tiny_run, run)
    export_run(run, log=lambda *_: None)
    capsys.readouterr()
    settings = ["--prime", "Pip", "--chars", "200", "--temperature", "0.8", "--seed", "3"]
    assert main(["sample", run, *settings]) == 0
    sampled = capsys.readouterr().out
    assert main(["generate", f"{run}/export", "--backend", "numpy", *settings]) == 0
    generated = capsys.readouterr().out
    assert sampled == generated and len(sampled) == len("Pip") + 200 + 1
