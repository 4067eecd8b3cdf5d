"""The TFLite rows through tflite-runtime 2.14, run by the parity suite inside .venv-tflite-runtime
(numpy<2, no TensorFlow, no LiteRT: the runtime's tflite backend falls back to tflite_runtime).

    python tests/parity/tflite_runtime_leg.py INPUTS.npz EXPORT_DIR

INPUTS.npz holds the probe's inputs, the Keras reference's record (keys prefixed reference_) and
the corpus' words; the measures of the float32 and int8 rows are printed as JSON.
"""

import json
import sys

import numpy as np

from estella.runtime import parity as probe
from estella.runtime.backends import open_backend


def main(inputs_path, export_dir):
    with np.load(inputs_path, allow_pickle=False) as data:
        data = {k: str(v) if v.dtype.kind == "U" else v for k, v in data.items()}
    reference = {k[len("reference_"):]: v for k, v in data.items() if k.startswith("reference_")}
    words = set(data["words"].split("\n"))
    rows, interpreters = {}, set()
    for precision in ("float32", "int8"):
        backend = open_backend(export_dir, "tflite", precision)
        interpreters.add(type(backend.interpreter).__module__.split(".")[0])
        rows[precision] = probe.compare(reference, probe.probe(backend, data), words)
    import tflite_runtime

    print(json.dumps({"interpreter": f"{'+'.join(sorted(interpreters))} {tflite_runtime.__version__}",
                      "numpy": np.__version__, "rows": rows}))


if __name__ == "__main__":
    main(*sys.argv[1:])
