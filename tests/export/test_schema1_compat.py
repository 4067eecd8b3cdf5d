"""An export of the previous version (manifest and weights.npz schema 1), made by that version's own
code from git history, loads in today's runtime and writes the same text that version's runtime wrote.

The fixture is generated, not hand-written: `git archive` of PREVIOUS (the commit before the model
family) into a cache outside the checkout, then that tree's make_random_run, export_run and
`estella generate` in a subprocess (tests/export/previous_version.py). It is kept in
~/.cache/estella/previous-version/<commit>/ (ESTELLA_CACHE overrides ~/.cache/estella).
"""

import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from contextlib import redirect_stdout

import pytest

pytestmark = pytest.mark.tensorflow

PREVIOUS = "eb821cd"  # 66280e2~1: the last commit whose exports are schema 1 only
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def git(*args):
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, timeout=120)


def previous_commit():
    done = git("rev-parse", "--verify", "--quiet", f"{PREVIOUS}^{{commit}}")
    if done.returncode != 0:
        shallow = git("rev-parse", "--is-shallow-repository").stdout.decode().strip()
        pytest.fail(f"commit {PREVIOUS} (the previous version, whose export this test loads) is not in the git "
                    f"history of {REPO}" + (" (a shallow clone: fetch with `git fetch --unshallow`)"
                                            if shallow == "true" else "") + "; the schema-1 fixture is made from it")
    return done.stdout.decode().strip()


@pytest.fixture(scope="session")
def previous_export():
    """(export dir, {"texts": {backend: text}, ...}) written by the previous version, cached per commit."""
    commit = previous_commit()
    cache = os.path.join(os.environ.get("ESTELLA_CACHE", os.path.expanduser("~/.cache/estella")),
                         "previous-version", commit)
    texts_path = os.path.join(cache, "made", "texts.json")
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    with open(cache + ".lock", "w") as lock:  # two suites on one machine: the first makes it, the other waits
        fcntl.flock(lock, fcntl.LOCK_EX)
        make_previous_export(cache, commit, texts_path)
    with open(texts_path, encoding="utf-8") as f:
        return os.path.join(cache, "made", "export"), json.load(f)


def make_previous_export(cache, commit, texts_path):
    if not os.path.isfile(texts_path):
        shutil.rmtree(cache, ignore_errors=True)
        tree = os.path.join(cache, "tree")
        os.makedirs(tree)
        archive = git("archive", "--format=tar", commit)
        assert archive.returncode == 0, archive.stderr.decode()
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tree, filter="data")
        made = os.path.join(cache, "made.tmp")
        done = subprocess.run([sys.executable, os.path.join(HERE, "previous_version.py"), tree, made],
                              capture_output=True, text=True, timeout=900,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        assert done.returncode == 0, f"the previous version's export failed:\n{done.stderr[-4000:]}"
        os.rename(made, os.path.join(cache, "made"))


def generate(export_dir, backend, recorded):
    from estella.runtime.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["generate", export_dir, "--backend", backend, "--prime", recorded["prime"],
                     "--chars", str(recorded["chars"]), "--seed", str(recorded["seed"])])
    assert code == 0
    return out.getvalue()


def test_the_fixture_is_the_previous_schema(previous_export):
    import numpy as np

    export_dir, _ = previous_export
    with open(os.path.join(export_dir, "manifest.json"), encoding="utf-8") as f:
        raw = json.load(f)
    assert raw["schema_version"] == 1 and "cell" not in raw["model"] and raw["model"]["units"] == 24
    with np.load(os.path.join(export_dir, "weights.npz")) as w:
        assert "gru_kernel" in w.files and "layer0_kernel" not in w.files


@pytest.mark.parametrize("backend", ["numpy", "tflite", "onnx"])
def test_todays_runtime_writes_the_previous_versions_text(previous_export, backend):
    from estella.runtime.manifest import load_manifest

    export_dir, recorded = previous_export
    manifest = load_manifest(export_dir)  # sizes and sha256 too
    assert manifest["model"]["cell"] == "gru" and manifest["model"]["state_size"] == 24
    text = generate(export_dir, backend, recorded)
    assert len(text) > recorded["chars"]
    assert text == recorded["texts"][backend]


def test_inspect_shows_the_previous_export_as_one_gru(previous_export, capsys):
    from estella.runtime.cli import main

    assert main(["inspect", previous_export[0]]) == 0
    out = capsys.readouterr().out
    assert "(schema 1," in out and "cell=gru layers=1 units=24 state_size=24" in out


def test_the_previous_versions_run_reads_as_one_gru_and_samples(previous_export, capsys):
    """Its run's config.json ("units": 24, no cell, layers or dropout) loads as what it was."""
    from estella.build.config import load_config
    from estella.runtime.cli import main

    run_dir = os.path.join(os.path.dirname(previous_export[0]), "run")
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as f:
        raw = json.load(f)["hparams"]
    assert raw["units"] == 24 and not {"cell", "layers", "dropout"} & set(raw)
    hp = load_config(run_dir)["hparams"]
    assert (hp.cell, hp.layers, hp.units, hp.dropout) == ("gru", 1, [24], 0.0)
    assert main(["sample", run_dir, "--prime", "Pip", "--chars", "20", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("Pip")
