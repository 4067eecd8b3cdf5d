"""The edge proof's fixture, made on the host: a model's export and the Keras reference's record.

    python edge/make_fixture.py CACHE_DIR [--corpus PATH] [--cell gru|lstm] [--units U[,U...]]
                                [--embedding-dim E] [--steps N]

prints the fixture folder, CACHE_DIR/<key>/, holding export/ (what `estella export` writes) and
reference.npz (the parity probe's inputs, the Keras model's record of them, keys prefixed
reference_, and the corpus' words). The key hashes the sources that make the export and the
reference and the arguments, so an unchanged fixture is reused and a changed one is remade.

The model has fan-in random weights over the corpus' characters: no training, the same shapes as a
trained one. --units takes one value per recurrent layer (`--cell lstm --units 256,256`: a stacked
LSTM); the default is one GRU layer of 256. Runs in the main virtualenv (TensorFlow); the device only reads the folder.
"""

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(REPO, "..", "shared", "data", "great-expectations.txt")
SOURCES = ("build", "export", "runtime", "tests/parity/parity_models.py", "edge/make_fixture.py", "pyproject.toml")


def fixture_key(args):
    """sha256 over the tracked files that make the export and the reference, and the arguments (the C
    runtime's sources, which make neither, are left out)."""
    files = subprocess.run(["git", "ls-files", "--", *SOURCES, ":!runtime/c"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    h = hashlib.sha256(repr((os.path.abspath(args.corpus), args.cell, args.units, args.embedding_dim,
                             args.steps)).encode())
    for name in sorted(files):
        h.update(name.encode())
        with open(os.path.join(REPO, name), "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def units_list(text):
    """--units: 1 to 4 comma-separated integers >= 1."""
    try:
        units = [int(u) for u in text.split(",")]
    except ValueError:
        units = []
    if not 1 <= len(units) <= 4 or min(units) < 1:
        raise argparse.ArgumentTypeError(f"must be 1 to 4 comma-separated integers >= 1 (one per layer), got {text!r}")
    return units


def make(folder, args):
    """Write export/ and reference.npz into folder."""
    sys.path.insert(0, os.path.join(REPO, "tests", "parity"))
    import parity_models as models  # the parity suite's text and Keras reference

    from estella.build.random_run import make_random_run
    from estella.export.pipeline import export_run
    from estella.runtime import parity

    text = models.corpus_text(args.corpus)
    chars = sorted(set(text))
    run_dir = os.path.join(folder, "run")
    make_random_run(run_dir, chars, embedding_dim=args.embedding_dim, units=args.units, cell=args.cell)
    export_run(run_dir, os.path.join(folder, "export"), log=lambda *a: None)
    inputs = parity.make_inputs(text[:parity.BATCH * args.steps], chars, steps=args.steps)
    reference = parity.probe(models.keras_reference(run_dir), inputs)
    words = "\n".join(sorted(parity.corpus_words(text)))
    np.savez(os.path.join(folder, "reference.npz"), **inputs, **{"reference_" + k: v for k, v in reference.items()},
             words=np.array(words))
    shutil.rmtree(run_dir)  # the export is what the device runs; the weights are in it


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cache_dir")
    parser.add_argument("--corpus", default=CORPUS)
    parser.add_argument("--cell", choices=("gru", "lstm"), default="gru")
    parser.add_argument("--units", type=units_list, default=[256], metavar="U[,U...]",
                        help="units of each recurrent layer, 1 to 4 comma-separated values (default 256)")
    parser.add_argument("--embedding-dim", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    if not os.path.exists(args.corpus):
        sys.exit(f"edge fixture: the corpus {os.path.abspath(args.corpus)} is missing (pass --corpus PATH)")
    folder = os.path.join(args.cache_dir, fixture_key(args))
    os.makedirs(args.cache_dir, exist_ok=True)
    # Two suites on one machine may ask for the same fixture at once: the first makes it, the other waits.
    with open(folder + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(folder, "reference.npz")):
            make_into(folder, args)
    print(folder)


def make_into(folder, args):
    tmp = tempfile.mkdtemp(prefix=".fixture-", dir=os.path.dirname(folder))
    stdout = os.dup(1)
    os.dup2(2, 1)  # TensorFlow's and the converters' chatter goes to stderr: stdout is the folder alone
    try:
        make(tmp, args)
        shutil.rmtree(folder, ignore_errors=True)  # a half-made one of a killed run, if any
        os.replace(tmp, folder)
    finally:
        sys.stdout.flush()
        os.dup2(stdout, 1)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
