"""The device side of the edge proof: run the runtime's parity check for one row in a device virtualenv.

    python device_parity.py FIXTURE_DIR BACKEND:PRECISION

FIXTURE_DIR holds export/ and reference.npz (edge/make_fixture.py). Each row is opened the way a
user opens it (open_backend), probed, compared with the host's Keras record and checked against
the thresholds, all by estella.runtime.parity; this file adds no measure of its own. Prints JSON:
the device (machine, CPU features the kernel reports to programs), the versions, and the row's
measures and failures. A row that cannot be opened is a failure, never a skip.
"""

import ctypes
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
import time
import traceback

import numpy as np

from estella.runtime import parity
from estella.runtime.backends import open_backend
from estella.runtime.manifest import load_manifest

# getauxval(AT_HWCAP) bits of arm64 (linux/arch/arm64/include/uapi/asm/hwcap.h): what the CPU offers
# programs, here as qemu's emulated CPU model sets them.
AT_HWCAP = 16
HWCAP_BITS = {0: "fp", 1: "asimd", 3: "aes", 4: "pmull", 5: "sha1", 6: "sha2", 7: "crc32", 8: "atomics",
              9: "fphp", 10: "asimdhp", 12: "asimdrdm", 15: "lrcpc", 16: "dcpop", 20: "asimddp", 22: "sve"}
PACKAGES = ("estella", "numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "tensorflow", "tensorflow-cpu")


def hwcaps():
    value = ctypes.CDLL(None).getauxval(ctypes.c_ulong(AT_HWCAP))
    return [name for bit, name in sorted(HWCAP_BITS.items()) if value >> bit & 1]


def versions():
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def interpreter_of(backend):
    """The package that runs the row: ai_edge_litert or tflite_runtime for tflite, else the backend."""
    interpreter = getattr(backend, "interpreter", None)
    return type(interpreter).__module__.split(".")[0] if interpreter is not None else backend.name


def run_row(fixture, data, reference, words, backend_name, precision):
    start, cpu_start = time.monotonic(), time.process_time()  # what the row costs CI, not a device's speed
    try:
        backend = open_backend(os.path.join(fixture, "export"), backend_name, precision)
        measures = parity.compare(reference, parity.probe(backend, data), words)
        return {"interpreter": interpreter_of(backend), "measures": measures,
                "failures": parity.check(measures, precision), "emulated_seconds": time.monotonic() - start,
                "emulated_cpu_seconds": time.process_time() - cpu_start}
    except Exception as e:  # reported as the row's failure, with where it came from
        return {"interpreter": None, "measures": None,
                "failures": [f"{type(e).__name__}: {e}"], "traceback": traceback.format_exc()}


def main(fixture, row):
    with np.load(os.path.join(fixture, "reference.npz"), allow_pickle=False) as data:
        data = {k: str(v) if v.dtype.kind == "U" else v for k, v in data.items()}
    reference = {k[len("reference_"):]: v for k, v in data.items() if k.startswith("reference_")}
    words = set(data["words"].split("\n"))
    backend_name, precision = row.split(":")
    result = run_row(fixture, data, reference, words, backend_name, precision)
    with open(parity.__file__, "rb") as f:  # which measure ran: the host checks it is the checkout's
        parity_sha256 = hashlib.sha256(f.read()).hexdigest()
    shape = load_manifest(os.path.join(fixture, "export"), verify=False)["model"]
    model = {"vocab_size": shape["vocab_size"], "embedding_dim": shape.get("embedding_dim"), "cell": shape["cell"],
             "units": [layer["units"] for layer in shape["layers"]], "state_size": shape["state_size"]}
    print(json.dumps({"model": model,
                      "machine": platform.machine(), "python": platform.python_version(), "parity_sha256": parity_sha256,
                      "hwcaps": hwcaps(), "cpu_count": os.cpu_count(), "versions": versions(),
                      "tensorflow_imported": "tensorflow" in sys.modules,
                      "steps": int(data["steps"]), "row": row, **result}))


if __name__ == "__main__":
    main(*sys.argv[1:])
