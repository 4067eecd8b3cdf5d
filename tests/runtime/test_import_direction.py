"""Imports flow one way: the runtime (and the server built on it) import nothing from the training,
export or bench stages, so a runtime-only install never needs them. Read from the sources, so an
import inside a function that no test happens to call is caught too."""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FORBIDDEN = ("estella.build", "estella.export", "estella.bench")


def imported_modules(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def sources(folder):
    for root, _, names in os.walk(os.path.join(REPO, folder)):
        yield from (os.path.join(root, n) for n in sorted(names) if n.endswith(".py"))


@pytest.mark.parametrize("folder", ["runtime", "serve"])
def test_no_import_of_the_training_export_or_bench_stages(folder):
    found = [f"{os.path.relpath(path, REPO)}: {module}" for path in sources(folder)
             for module in imported_modules(path) if module.startswith(FORBIDDEN)]
    assert list(sources(folder)), f"no sources found under {folder}/"
    assert not found, "imports against the one-way flow: " + "; ".join(found)
