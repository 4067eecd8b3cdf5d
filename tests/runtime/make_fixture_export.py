"""Train the `tiny` preset on a slice of the corpus and export it: the real export the runtime tests use.

`make test` runs this in the main virtualenv (it needs TensorFlow) and then runs tests/runtime in a
virtualenv without TensorFlow, pointed at the result through ESTELLA_RUNTIME_EXPORT:

    python tests/runtime/make_fixture_export.py .cache/runtime-fixture
"""

import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "..", "..", "..", "shared", "data", "great-expectations.txt")
SLICE_CHARS = 60_000  # the same slice as tests/conftest.py's corpus_slice


def export_tiny_run(run_dir, out_dir):
    """Export a trained run into out_dir with every format; return out_dir."""
    from estella.export.pipeline import export_run

    export_run(run_dir, out_dir, force=True, log=lambda *a: None)
    return out_dir


def main(folder):
    from estella.build.train import train

    if not os.path.exists(CORPUS):
        sys.exit(f"the test corpus is missing: {os.path.abspath(CORPUS)}")
    run_dir, out_dir = os.path.join(folder, "run"), os.path.join(folder, "export")
    shutil.rmtree(run_dir, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:  # the slice is never kept: the corpus is not ours to copy
        slice_path = os.path.join(tmp, "slice.txt")
        with open(CORPUS, encoding="utf-8") as f, open(slice_path, "w", encoding="utf-8") as out:
            out.write(f.read(SLICE_CHARS))
        train(run_dir, slice_path, "tiny", verbose=0)
    export_tiny_run(run_dir, out_dir)
    print(f"fixture export: {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", ".cache", "runtime-fixture"))
