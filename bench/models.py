"""The models the generation benchmarks run: random-weight runs, exported with `estella export`.

Speed does not depend on the weights' values, so a random run at the right shape stands for a
trained one; it keeps the benchmark independent of any training in progress. Each export is
cached under .cache/bench/ and redone when the export or model code changes.
"""

import hashlib
import os
import subprocess
import sys
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(REPO, ".cache", "bench")
LOCAL_CORPUS = os.path.abspath(os.path.join(REPO, "..", "shared", "data", "great-expectations.txt"))
# Code whose change makes a cached export stale.
EXPORT_SOURCES = ("export", "build/model.py", "build/random_run.py")


class Shape(NamedTuple):
    """A generation model's shape: the embedding width, one recurrent cell kind and its units per layer."""
    embedding_dim: int
    units: tuple
    cell: str = "gru"

    def words(self):
        """"GRU 1x512", "LSTM 2x512", "LSTM 512/256" (a stack of unequal layers)."""
        layers = f"{len(self.units)}x{self.units[0]}" if len(set(self.units)) == 1 else "/".join(map(str, self.units))
        return f"{self.cell.upper()} {layers}"


def default_corpus():
    from estella.build.corpus import DEFAULT_CORPUS
    return LOCAL_CORPUS if os.path.exists(LOCAL_CORPUS) else DEFAULT_CORPUS


def vocabulary(corpus):
    from estella.build.corpus import load
    from estella.build.vocab import Vocab
    return Vocab.from_text(load(corpus).text).chars


def code_digest():
    h = hashlib.sha256()
    for source in EXPORT_SOURCES:
        path = os.path.join(REPO, source)
        files = [path] if os.path.isfile(path) else sorted(
            os.path.join(d, f) for d, _, names in os.walk(path) for f in names if f.endswith((".py", ".md")))
        for f in files:
            h.update(f.encode())
            with open(f, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:16]


def prepare(name, vocab_chars, shape, cache=CACHE, log=print):
    """Return (run_dir, export_dir) of a random run of this Shape, exporting it if the cache is stale."""
    from estella.build.random_run import make_random_run

    E, units, cell = shape.embedding_dim, list(shape.units), shape.cell
    key = hashlib.sha256(f"{code_digest()} {''.join(vocab_chars)} {E} {units} {cell}".encode()).hexdigest()[:16]
    run_dir = os.path.join(cache, f"{name}-{key}", "run")
    export_dir = os.path.join(cache, f"{name}-{key}", "export")
    if os.path.exists(os.path.join(export_dir, "manifest.json")):
        return run_dir, export_dir
    log(f"preparing {name}: random run E={E} {shape.words()}, then `estella export` (once; cached)")
    make_random_run(run_dir, vocab_chars, embedding_dim=E, units=units, seed=0, cell=cell)
    subprocess.run([sys.executable, "-m", "estella.runtime.cli", "export", run_dir, "--out", export_dir],
                   check=True)
    return run_dir, export_dir
