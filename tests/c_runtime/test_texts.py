"""estella-c writes exactly the text of `estella generate ... --backend tflite` (float32): greedy,
sampled, with top-k and top-p, over several seeds, on a real export of a trained model."""

import json
import os
import shutil
import subprocess

import pytest

from estella.runtime.generator import Generator

SETTINGS = [  # temperature, top_k, top_p
    (0.5, None, None),
    (1.0, None, None),
    (0.0, None, None),
    (1.3, 5, None),
    (0.8, None, 0.9),
    (1.0, 10, 0.5),
    (1e-30, None, None),  # 1/T overflows float32: greedy
    (2.5, 1000, 0.999),
]


def c_text(estella_c, export, prime, chars, temperature=1.0, top_k=None, top_p=None, seed=None, extra=()):
    args = [estella_c, export, "--prime", prime, "--chars", str(chars), "--temperature", repr(temperature)]
    args += ["--top-k", str(top_k)] if top_k else []
    args += ["--top-p", repr(top_p)] if top_p else []
    args += ["--seed", str(seed)] if seed is not None else []
    done = subprocess.run([*args, *extra], capture_output=True, text=True, encoding="utf-8")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # LiteRT's own log is kept quiet
    return done.stdout


@pytest.fixture(scope="module")
def tflite_generator(real_export):
    return Generator.load(real_export, backend="tflite")


@pytest.mark.parametrize("temperature, top_k, top_p", SETTINGS)
def test_texts_equal_the_python_runtime(estella_c, real_export, tflite_generator, temperature, top_k, top_p):
    for seed, prime in ((7, "Pip"), (1, ""), (123456789, "Joe said")):
        want = tflite_generator.generate(prime, 400, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        got = c_text(estella_c, real_export, prime, 400, temperature, top_k, top_p, seed)
        assert got == want + "\n", (seed, prime)


def test_the_issues_command(estella_c, real_export, tflite_generator):
    """estella-c EXPORT --prime Pip --chars 500 --temperature 0.5 --seed 7, flag for flag."""
    done = subprocess.run([estella_c, real_export, "--prime", "Pip", "--chars", "500", "--temperature", "0.5",
                           "--seed", "7"], capture_output=True, text=True, encoding="utf-8")
    want = tflite_generator.generate("Pip", 500, temperature=0.5, seed=7)
    assert done.returncode == 0 and done.stdout == want + "\n"


def test_no_echo_skip_unknown_and_zero_chars(estella_c, real_export, tflite_generator):
    want = tflite_generator.generate("P#ip", 50, seed=3, echo=False, skip_unknown=True)
    assert c_text(estella_c, real_export, "P#ip", 50, seed=3, extra=["--no-echo", "--skip-unknown"]) == want + "\n"
    assert c_text(estella_c, real_export, "Pip", 0, seed=3) == "Pip\n"


def test_unseeded_texts_differ(estella_c, real_export):
    texts = {c_text(estella_c, real_export, "Pip", 60) for _ in range(3)}
    assert len(texts) > 1


def test_stats(estella_c, real_export):
    done = subprocess.run([estella_c, real_export, "--chars", "40", "--seed", "1", "--stats"],
                          capture_output=True, text=True)
    assert done.returncode == 0
    assert "40 chars in" in done.stderr and "chars/s" in done.stderr


def test_schema_2_manifest_reads_the_state_size(estella_c, real_export, tflite_generator, tmp_path):
    """The state row is opaque: its width is model.state_size in a schema-2 manifest (CONTRACT.md).
    The same graph described by schema 2 writes the same text; a wrong width is refused."""
    export = str(tmp_path / "schema2")
    shutil.copytree(real_export, export)
    path = os.path.join(export, "manifest.json")
    manifest = json.load(open(path))
    if manifest["schema_version"] == 1:  # the fixture of a main without schema 2 yet: describe it in schema 2
        model = manifest["model"]
        units = model.pop("units")
        model["layers"] = [{"name": "gru", "cell": "gru", "units": units}]
        model["state_size"] = units
        manifest["state"]["shape"] = ["batch", units]
        manifest["schema_version"] = 2
        json.dump(manifest, open(path, "w"))
    want = tflite_generator.generate("Pip", 200, temperature=0.8, seed=5)
    assert c_text(estella_c, export, "Pip", 200, 0.8, seed=5) == want + "\n"

    manifest["model"]["state_size"] += 1
    manifest["state"]["shape"][1] += 1
    json.dump(manifest, open(path, "w"))
    done = subprocess.run([estella_c, export, "--chars", "5"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "does not belong with manifest.json" in done.stderr and "state" in done.stderr


@pytest.mark.parametrize("precision", ["int8", "int8-full"])
def test_int8_texts_equal_the_python_runtime(estella_c, real_export, precision):
    """The dynamic-range int8 file and the full-integer one run through the same C step and sampler."""
    gen = Generator.load(real_export, backend="tflite", precision=precision)
    for seed, temperature in ((2, 0.0), (2, 0.7), (9, 1.0)):
        want = gen.generate("Pip", 300, temperature=temperature, seed=seed)
        assert c_text(estella_c, real_export, "Pip", 300, temperature, seed=seed, extra=["--precision", precision]) == want + "\n"


def test_the_installed_litert_is_the_version_the_declarations_are_for():
    """runtime/c/src/litert_api.h declares LiteRT's C API as it is in one version; another may differ."""
    import importlib.metadata
    import re

    header = open(os.path.join(os.path.dirname(__file__), "..", "..", "runtime", "c", "src", "litert_api.h")).read()
    pinned = re.search(r'#define LITERT_PINNED_VERSION "([\d.]+)"', header).group(1)
    installed = importlib.metadata.version("ai-edge-litert")
    assert installed.split(".")[:2] == pinned.split(".")[:2], (installed, pinned)


@pytest.mark.parametrize("cell, units", [("lstm", [48, 32]), ("gru", [40, 24, 16])])
def test_any_cell_and_depth(estella_c, tmp_path, cell, units):
    """The state row is opaque to estella-c: a 2-layer LSTM and a 3-layer GRU (schema 2, random
    weights, a real `estella export`) write the Python runtime's texts too."""
    from estella.build.random_run import make_random_run
    from estella.export.pipeline import export_run

    run, export = str(tmp_path / "run"), str(tmp_path / "export")
    make_random_run(run, sorted(set("\n !.,'" + "abcdefghijklmnopqrstuvwxyzPJ")), embedding_dim=12, units=units, cell=cell)
    manifest = export_run(run, export, log=lambda *a: None)
    assert manifest["model"]["state_size"] == sum(units) * (2 if cell == "lstm" else 1)
    gen = Generator.load(export, backend="tflite")
    for seed, temperature, top_k, top_p in ((4, 0.0, None, None), (4, 0.6, None, None), (8, 1.0, 6, 0.9)):
        want = gen.generate("Pip", 300, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        assert c_text(estella_c, export, "Pip", 300, temperature, top_k, top_p, seed) == want + "\n"
