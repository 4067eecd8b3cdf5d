"""Run the PREVIOUS version's own code (a tree from `git archive`) to make a schema-1 export and the
text its own runtime writes from it. Run by test_schema1_compat.py as

    python tests/export/previous_version.py OLD_TREE OUT_DIR

OLD_TREE holds the old version's top-level folders (build, export, runtime, ...). They are imported
as the `estella` package from there; the current checkout's editable install is taken off the
import path first, and the script checks that every module it ran came from OLD_TREE.
"""

import contextlib
import io
import json
import os
import sys

PRIME, CHARS, SEED = "Pip", 120, 1
BACKENDS = ("numpy", "tflite", "onnx")


def import_old_tree(old_tree):
    package_root = os.path.join(old_tree, ".import")
    estella = os.path.join(package_root, "estella")
    os.makedirs(estella, exist_ok=True)
    for stage in ("build", "export", "runtime", "bench", "serve"):
        link = os.path.join(estella, stage)
        if not os.path.lexists(link):
            os.symlink(os.path.join(old_tree, stage), link)
    # The editable install of the checkout maps estella.* to it through a finder on sys.meta_path.
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "editable" not in repr(h).lower()]
    sys.path.insert(0, package_root)
    sys.path_importer_cache.clear()


def main(old_tree, out_dir):
    import_old_tree(old_tree)
    from estella.build.random_run import make_random_run
    from estella.export.pipeline import export_run
    from estella.runtime.cli import main as cli

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    run = make_random_run(os.path.join(out_dir, "run"), chars, embedding_dim=8, units=24, seed=3)
    export_run(run, os.path.join(out_dir, "export"), log=lambda *a: None)
    texts = {}
    for backend in BACKENDS:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli(["generate", os.path.join(out_dir, "export"), "--backend", backend, "--prime", PRIME,
                        "--chars", str(CHARS), "--seed", str(SEED)])
        assert code == 0, (backend, code)
        texts[backend] = out.getvalue()
    ran = {name: getattr(m, "__file__", None) for name, m in sys.modules.items() if name.startswith("estella.")}
    foreign = {n: f for n, f in ran.items() if f and not os.path.realpath(f).startswith(os.path.realpath(old_tree))}
    assert not foreign, f"modules not from the old tree: {foreign}"
    with open(os.path.join(out_dir, "texts.json"), "w", encoding="utf-8") as f:
        json.dump({"prime": PRIME, "chars": CHARS, "seed": SEED, "texts": texts}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
