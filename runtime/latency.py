"""µs per character for each backend and precision of an export, and the runtime's own share of it.

    python -m estella.runtime.latency DIR [DIR...] [--chars 500] [--repeats 20]

"bare" is the interpreter alone in a loop (set inputs, invoke, read outputs, feed the state back);
"generate" is Generator.generate at temperature 0.8 with top-k and top-p; the difference is the
runtime's overhead per character (sampling, state handling, Python), by the wall clock and by this
thread's CPU time. "runtime alone" runs generate on a step that hands back stored outputs at no
cost: the overhead measured directly, without subtracting two noisy numbers. Each number is the best of --repeats runs, since a shared machine only ever adds time.
"""

import argparse
import time

import numpy as np

from .backends import BACKENDS, find_artifact
from .backends.base import Backend
from .errors import MissingDependency
from .generator import Generator
from .manifest import load_manifest


def bare_loop(backend):
    """A function running n steps on the interpreter itself, bypassing the runtime."""
    ids = np.zeros((1, 1), np.int32)
    if backend.name == "tflite":
        interp, i_ids, i_state = backend.interpreter, backend.ids_index, backend.state_index
        i_logits, i_new = backend.logits_index, backend.new_state_index

        def run(n, state):
            for _ in range(n):
                interp.set_tensor(i_ids, ids)
                interp.set_tensor(i_state, state)
                interp.invoke()
                interp.get_tensor(i_logits)
                state = interp.get_tensor(i_new)
    elif backend.name == "onnx":
        session, names = backend.session, ["logits", "new_state"]

        def run(n, state):
            for _ in range(n):
                _, state = session.run(names, {"ids": ids, "state": state})
    else:
        def run(n, state):
            for _ in range(n):
                _, state = backend._step(ids, state)
    return run


class ReplayedStep(Backend):
    """A backend's outputs for one step, handed back again at no cost: what is left of
    Generator.generate's time per character is the runtime's own (sampling, state, the loop)."""

    def __init__(self, backend):
        self.name, self.precision = backend.name, backend.precision
        self.vocab_size, self.units = backend.vocab_size, backend.units
        self.max_batch, self.max_time = backend.max_batch, backend.max_time
        self.outputs = backend.step(np.zeros((1, 1), np.int32), backend.initial_state())

    def _step(self, ids, state):
        return self.outputs


def best_us_per_char(fn, chars, repeats):
    """(wall, this thread's CPU) µs per character, each the best of the repeats.

    The CPU time of the calling thread is what Python spends (plus the interpreter's work where it
    runs on this thread); on a busy machine it is steadier than the wall clock, which also counts
    the time spent waiting for a core."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn()
        cpu = min(cpu, time.thread_time() - start_cpu)
        wall = min(wall, time.perf_counter() - start)
    return wall / chars * 1e6, cpu / chars * 1e6


def measure(export_dir, chars=500, repeats=20, backends=("tflite", "onnx", "numpy"), num_threads=None):
    """Yield dicts: backend, precision, bare_us, generate_us, overhead_us (wall), overhead_cpu_us (this thread),
    runtime_alone_us (generate with the step replayed at no cost)."""
    manifest = load_manifest(export_dir, verify=False)
    options = {"num_threads": num_threads} if num_threads else {}
    for name in backends:
        for precision in ("float32", "int8"):
            if find_artifact(manifest, name, precision) is None:
                continue
            try:
                gen = Generator.load(export_dir, name, precision, **options)
            except MissingDependency:
                continue
            state = gen.initial_state()
            bare = bare_loop(gen.backend)
            bare(50, state)  # warm up: first invokes allocate
            gen.generate("Pip", 50, temperature=0.8, seed=0)
            replayed = Generator(ReplayedStep(gen.backend), gen.vocab)
            settings = dict(temperature=0.8, top_k=40, top_p=0.95, seed=0, echo=False)
            bare_us, bare_cpu = best_us_per_char(lambda: bare(chars, state), chars, repeats)
            gen_us, gen_cpu = best_us_per_char(lambda: gen.generate("Pip", chars, **settings), chars, repeats)
            alone_us, _ = best_us_per_char(lambda: replayed.generate("Pip", chars, **settings), chars, repeats)
            yield {"backend": name, "precision": precision, "bare_us": bare_us, "generate_us": gen_us,
                   "overhead_us": gen_us - bare_us, "overhead_cpu_us": gen_cpu - bare_cpu, "runtime_alone_us": alone_us}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m estella.runtime.latency", description=__doc__.split("\n")[0])
    parser.add_argument("export_dirs", nargs="+", metavar="DIR")
    parser.add_argument("--chars", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--backends", default="tflite,onnx,numpy", help=f"comma-separated, of {', '.join(BACKENDS)}")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    print("| export | V | U | backend | precision | bare µs/char | generate µs/char | overhead µs/char "
          "| overhead, thread CPU µs/char | runtime alone (step replayed) µs/char |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for export_dir in args.export_dirs:
        model = load_manifest(export_dir, verify=False)["model"]
        for row in measure(export_dir, args.chars, args.repeats, args.backends.split(","), args.threads):
            print(f"| {export_dir} | {model['vocab_size']} | {model['units']} | {row['backend']} | {row['precision']} "
                  f"| {row['bare_us']:.1f} | {row['generate_us']:.1f} | {row['overhead_us']:.1f} "
                  f"| {row['overhead_cpu_us']:.1f} | {row['runtime_alone_us']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
