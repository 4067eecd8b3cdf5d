"""One generation process, for cold start and peak memory: it prints FIRST after the first generated
character, then generates the rest and prints its peak RSS as JSON.

The peak is VmHWM from /proc/self/status, not getrusage's ru_maxrss: on Linux ru_maxrss keeps the
parent's peak across fork and exec, so a child of a process that has loaded TensorFlow would report
TensorFlow's memory whatever it ran.

    python -m estella.bench.probe BACKEND PRECISION DIR --chars N
BACKEND is a runtime backend (DIR: an export) or `keras`, the TensorFlow path (DIR: a run), which
samples with the Keras reference model as `estella sample` does.
"""

import json
import sys

PRIME = "T"


def first_then_rest(backend, precision, path, chars, threads):
    if backend == "keras":
        from estella.build.sample import generate_text, load_reference
        model, vocab, _ = load_reference(path, batch_size=1)
        yield generate_text(model, vocab, PRIME, 1, seed=0)
        yield generate_text(model, vocab, PRIME, chars - 1, seed=0)
        return
    from estella.runtime.generator import Generator
    options = {"num_threads": threads} if backend in ("tflite", "onnx") else {}
    yield from Generator.load(path, backend=backend, precision=precision, **options).stream(
        PRIME, chars, seed=0, echo=False)


def main(argv=None):
    backend, precision, path, chars, threads = (argv or sys.argv[1:])[:5]
    for i, _ in enumerate(first_then_rest(backend, precision, path, int(chars), int(threads))):
        if i == 0:
            print("FIRST", flush=True)
    print(json.dumps({"peak_rss_kib": peak_rss_kib()}), flush=True)


def peak_rss_kib():
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmHWM:")))


if __name__ == "__main__":
    main()
