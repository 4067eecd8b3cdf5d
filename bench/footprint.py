"""Install sizes: site-packages of a runtime-only virtualenv per extra, against the training one.

The runtime venvs are real installs of this project (`pip install '.[tflite]'`), kept in
.venv-bench-<extra>/ and reused while pyproject.toml is unchanged.
"""

import glob
import hashlib
import os
import subprocess
import sys

from .models import REPO

EXTRAS = ("tflite", "onnx")


def site_packages(venv):
    found = glob.glob(os.path.join(venv, "lib", "python*", "site-packages"))
    return found[0] if found else None


def tree_bytes(path):
    """Sum of file sizes (as pip writes them; not disk blocks), links not followed."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            if not os.path.islink(full):
                total += os.path.getsize(full)
    return total


def largest(path, n=3):
    """The n biggest top-level entries of site-packages: which packages make the size."""
    sizes = []
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if name.endswith((".dist-info", "__pycache__")) or os.path.islink(full):
            continue
        sizes.append((tree_bytes(full) if os.path.isdir(full) else os.path.getsize(full), name))
    return [{"name": name, "mib": b / 2**20} for b, name in sorted(sizes, reverse=True)[:n]]


def requirements_stamp(extra):
    """What the venv must be rebuilt for: the base and the extra's requirements, nothing else."""
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    wanted = project["dependencies"] + project["optional-dependencies"][extra]
    return hashlib.sha256("\n".join(wanted).encode()).hexdigest()


def ensure_venv(extra, log=print):
    """Create (or reuse) .venv-bench-<extra> with `pip install '.[extra]'`; return its path or raise."""
    venv = os.path.join(REPO, f".venv-bench-{extra}")
    stamp = requirements_stamp(extra)
    marker = os.path.join(venv, ".bench-installed")
    if os.path.exists(marker) and open(marker).read() == stamp:
        return venv
    log(f"  creating {venv} (pip install '.[{extra}]'; once, then cached)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{REPO}[{extra}]"],
                   check=True, cwd=REPO)
    with open(marker, "w") as f:
        f.write(stamp)
    return venv


def measure(train_venv, log=print):
    out = {}
    venvs = {"train": train_venv}
    for extra in EXTRAS:
        try:
            venvs[extra] = ensure_venv(extra, log)
        except (subprocess.CalledProcessError, OSError) as e:
            out[extra] = {"error": f"could not build the [{extra}] virtualenv: {e}"}
    for name, venv in venvs.items():
        path = site_packages(venv)
        if path is None:
            out[name] = {"error": f"no site-packages in {venv}"}
            continue
        out[name] = {"venv": os.path.relpath(venv, REPO), "site_packages_mib": tree_bytes(path) / 2**20,
                     "largest": largest(path)}
    return out
