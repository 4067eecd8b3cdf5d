"""`estella generate` and `estella inspect`: output, flags, and exit code 2 with a message for bad input."""

import os

import pytest

from estella.runtime.cli import main
from estella.runtime.generator import Generator


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_prints_the_generators_text(numpy_export, capsys):
    code, out, err = run(capsys, "generate", numpy_export, "--prime", "Pip", "--chars", "80",
                         "--temperature", "0.7", "--top-k", "20", "--top-p", "0.9", "--seed", "4")
    assert code == 0 and err == ""
    want = Generator.load(numpy_export).generate("Pip", 80, temperature=0.7, top_k=20, top_p=0.9, seed=4)
    assert out == want + "\n"


def test_stream_prints_the_same_text(numpy_export, capsys):
    args = ["generate", numpy_export, "--prime", "Pip", "--chars", "60", "--seed", "1"]
    assert run(capsys, *args)[1] == run(capsys, *args, "--stream")[1]


def test_num_samples_stop_no_echo(numpy_export, capsys):
    gen = Generator.load(numpy_export)
    texts = gen.generate_many(["Pip"] * 2, 50, temperature=0.9, seed=8, echo=False, stop=["e"])
    code, out, _ = run(capsys, "generate", numpy_export, "--prime", "Pip", "--chars", "50", "--temperature", "0.9",
                       "--seed", "8", "--num-samples", "2", "--no-echo", "--stop", "e")
    assert code == 0
    assert out == f"--- sample 1 (seed 8) ---\n{texts[0]}\n--- sample 2 (seed 9) ---\n{texts[1]}\n"


def test_stats_and_verbose(numpy_export, capsys):
    code, out, err = run(capsys, "generate", numpy_export, "--chars", "30", "--stats", "--verbose")
    assert code == 0
    assert "backend: numpy float32 (chosen by auto" in err
    assert "30 chars in" in err and "chars/s" in err and "µs/char" in err


def test_skip_unknown(numpy_export, capsys):
    code, out, err = run(capsys, "generate", numpy_export, "--prime", "P#ip", "--chars", "20", "--seed", "1",
                         "--skip-unknown")
    assert code == 0 and out.startswith("Pip")


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "-1"], "--temperature must be a finite number >= 0"),
    (["--temperature", "nan"], "--temperature must be a finite number >= 0"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--top-k", "0"], "--top-k must be an integer >= 1"),
    (["--top-k", "9223372036854775808"], "--top-k must be an integer >= 1, got 9223372036854775808"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 9223372036854775807, got -1"),
    (["--seed", str(2**64)], f"--seed must be an integer from 0 to 9223372036854775807, got {2**64}"),
    (["--seed", str(2**63 - 1), "--num-samples", "2"], "--seed must be an integer from 0 to 9223372036854775806 "
                                                       "(2 streams take seeds seed to seed + 1)"),
    (["--chars", "-5"], "--chars must be an integer >= 0"),
    (["--num-samples", "0"], "--num-samples must be >= 1"),
    (["--num-samples", "4097"], "--num-samples must be at most 4096"),
    (["--precision", "int8"], "no int8 artifact"),
    (["--prime", "Pip #"], "not in the vocabulary: ['#'] (remove them, or skip them with --skip-unknown)"),
    (["--threads", "0"], "--threads must be an integer from 1 to"),
    (["--threads", str((os.cpu_count() or 1) + 1)], f"--threads must be an integer from 1 to {os.cpu_count()} "
                                                    "(the number of CPU cores)"),
    (["--stream", "--num-samples", "2"], "--stream writes one text as it is made; with --num-samples 2 leave out --stream"),
])
def test_bad_flags_exit_2_with_a_message(numpy_export, capsys, flags, message):
    code, out, err = run(capsys, "generate", numpy_export, *flags)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("flag, value, choices", [
    ("--backend", "gpu", "'auto', 'tflite', 'onnx', 'numpy', 'savedmodel', 'tflm'"),
    ("--precision", "int4", "'float32', 'float', 'int8', 'int8-full'"),
])
def test_backend_and_precision_are_argparse_choices(numpy_export, capsys, flag, value, choices):
    with pytest.raises(SystemExit) as e:
        main(["generate", numpy_export, flag, value])
    out, err = capsys.readouterr()
    assert e.value.code == 2 and out == ""
    assert f"invalid choice: '{value}' (choose from {choices})" in err
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "{auto,tflite,onnx,numpy,savedmodel,tflm}" in capsys.readouterr().out


def test_missing_export_dir(tmp_path, capsys):
    code, _, err = run(capsys, "generate", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err
    code, _, err = run(capsys, "inspect", str(tmp_path))
    assert code == 2 and "manifest.json is missing" in err


def test_inspect_prints_the_manifest(real_export, capsys):
    code, out, err = run(capsys, "inspect", real_export)
    assert code == 0
    gen = Generator.load(real_export, "numpy")
    assert f"vocab_size={len(gen.vocab)}" in out and f"state_size={gen.backend.state_size}" in out
    assert "cell=gru layers=1" in out
    assert "files verified: the size and sha256 of all" in out
    assert "loaded, shapes agree with the manifest: " in out and "tflite-float32, tflite-int8, onnx-float32" in out
    for name in ("tflite-float32", "tflite-int8", "onnx-float32", "onnx-int8", "numpy-float32", "savedmodel-float32"):
        assert out.count(f"  {name} ") == 2  # its artifact line and its parity line
    assert "provenance:" in out and "corpus_sha256" in out
