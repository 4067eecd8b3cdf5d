"""The parity suite's fixtures: each model is built, exported and probed once per session, and every
row's measures are kept so that `--parity-table PATH` can print them and write them to PATH."""

import json
import os
import subprocess

import numpy as np
import pytest

import parity_models as models
from estella.runtime import parity as probe
import parity_table
from estella.runtime.backends import open_backend

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TFLITE_RUNTIME_PYTHON = os.path.abspath(os.environ.get("ESTELLA_TFLITE_RUNTIME_PYTHON",
                                                       os.path.join(REPO, ".venv-tflite-runtime", "bin", "python")))
RESULTS = {}  # model key -> {"title", "model", "rows": {row name: measures}}
LEGS = set()  # what the tflite-runtime leg ran on, for the table's heading


def pytest_addoption(parser):
    parser.addoption("--parity-table", metavar="PATH", default=None,
                     help="print the parity table at the end and write it (markdown) to PATH")


def pytest_terminal_summary(terminalreporter, config):
    path = config.getoption("--parity-table")
    if not path or not RESULTS:
        return
    table = parity_table.render(RESULTS, [k for k in models.MODELS if k in RESULTS], sorted(LEGS))
    with open(path, "w", encoding="utf-8") as f:
        f.write(table)
    terminalreporter.write_line("")
    terminalreporter.write(table)
    terminalreporter.write_line(f"(written to {path})")


@pytest.fixture(scope="session")
def parity_text(corpus_path):
    return models.corpus_text(corpus_path)


@pytest.fixture(scope="session")
def parity_words(parity_text):
    return probe.corpus_words(parity_text)


@pytest.fixture(scope="session")
def parity_exports(request, tmp_path_factory, corpus_path, parity_text):
    """Export name -> (run_dir, export_dir), each built on first use."""
    built = {}

    def get(name):
        if name not in built:
            runs = tmp_path_factory.mktemp(f"parity-{name}")
            if name == "seed":
                run_dir = models.random_model(str(runs / "run"), models.seed_vocab(parity_text), 256, 1024)
            elif name == "small":
                run_dir = models.random_model(str(runs / "run"), models.SMALL_VOCAB, 32, 64, seed=1)
            elif name in models.STACKS:
                cell, units, embedding_dim = models.STACKS[name]
                run_dir = models.random_model(str(runs / "run"), models.seed_vocab(parity_text), embedding_dim,
                                              units, seed=2, cell=cell, logit_scale=models.STACK_LOGIT_SCALE)
            elif name == "tiny":
                run_dir = request.getfixturevalue("tiny_run")
            else:
                run_dir = models.trained_default(corpus_path)
            built[name] = run_dir, models.export(run_dir, str(runs / "export"))
        return built[name]

    return get


class ParityModel:
    """One model of the matrix: its export, the inputs every row sees, and the Keras reference's record."""

    def __init__(self, key, run_dir, export_dir, text, words):
        self.key, self.run_dir, self.export_dir, self.words = key, run_dir, export_dir, words
        self.reference = models.keras_reference(run_dir)
        steps = models.MODELS[key][2]
        mapped = models.map_text(text[:2 * probe.BATCH * steps], self.reference.chars)
        self.inputs = probe.make_inputs(mapped[:probe.BATCH * steps], self.reference.chars, steps=steps)
        self.reference_record = probe.probe(self.reference, self.inputs)
        RESULTS.setdefault(key, {"title": models.MODELS[key][0], "model": models.describe(run_dir), "rows": {}})

    def measure(self, backend, precision):
        # Each row loads the way a user loads it: through the runtime's open_backend.
        record = self.reference_record if backend == "keras" else probe.probe(
            open_backend(self.export_dir, backend, precision), self.inputs)
        measures = probe.compare(self.reference_record, record, self.words)
        return self.record(f"{backend} {precision}", precision, measures)

    def measure_tflite_runtime(self, tmp_dir):
        """The TFLite rows again, in the tflite-runtime 2.14 virtualenv (numpy<2, no TensorFlow)."""
        if not os.path.exists(TFLITE_RUNTIME_PYTHON):
            pytest.fail(f"{TFLITE_RUNTIME_PYTHON} is missing: build the tflite-runtime virtualenv with "
                        "`make tflite-runtime-venv` (or point ESTELLA_TFLITE_RUNTIME_PYTHON at one)")
        path = os.path.join(tmp_dir, f"{self.key}.npz")
        np.savez(path, **self.inputs, **{"reference_" + k: v for k, v in self.reference_record.items()},
                 words=models.words_array(self.words))
        done = subprocess.run([TFLITE_RUNTIME_PYTHON, os.path.join(HERE, "tflite_runtime_leg.py"), path,
                               self.export_dir], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"the tflite-runtime leg failed:\n{done.stdout}\n{done.stderr}"
        out = json.loads(done.stdout)
        venv = os.path.relpath(os.path.dirname(os.path.dirname(TFLITE_RUNTIME_PYTHON)), REPO)
        LEGS.add(f"{out['interpreter']} with numpy {out['numpy']} in {venv}")
        rows = {precision: self.record(f"{out['interpreter']} {precision}", precision, m)
                for precision, m in out["rows"].items()}
        return rows, out

    def record(self, row, precision, measures):
        measures["precision"] = precision
        RESULTS[self.key]["rows"][row] = measures
        return measures


@pytest.fixture(scope="session")
def parity_model(parity_exports, parity_text, parity_words):
    """Model key -> ParityModel, each built on first use."""
    built = {}

    def get(key):
        if key not in built:
            run_dir, export_dir = parity_exports(models.MODELS[key][1])
            built[key] = ParityModel(key, run_dir, export_dir, parity_text, parity_words)
        return built[key]

    return get
