"""`estella generate` and `estella inspect`: the runtime's commands. Neither imports TensorFlow,
except to load a SavedModel: `generate --backend savedmodel`, and `inspect` where TensorFlow is installed."""

import sys
import time

from .backends import BACKENDS, PRECISIONS
from .errors import EstellaError
from .quiet import show_library_logs
from .terminal import escape_unencodable, printable


class OutputError(EstellaError):
    """Standard output cannot take the text: a full disk, a closed file, or an encoding without its characters."""

    def __init__(self, message, discard_stdout=False):
        super().__init__(message)
        self.discard_stdout = discard_stdout  # what is left in the buffer cannot be written either


def add_parser(subparsers):
    p = subparsers.add_parser("generate", help="write text with an exported model (no TensorFlow needed)",
                              description="Write text with an exported model: the prime is run first, "
                                          "then one character is sampled at a time.")
    p.add_argument("export_dir", metavar="DIR", help="an export directory (estella export RUN --out DIR)")
    p.add_argument("--prime", default="", help="the text to start from (default: none, which starts as at a new paragraph)")
    p.add_argument("--chars", type=int, default=500, help="characters to generate after the prime (default 500)")
    p.add_argument("--temperature", type=float, default=1.0, help="0 picks the likeliest character (default 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the K likeliest characters")
    p.add_argument("--top-p", type=float, default=None, help="sample among the likeliest characters whose "
                                                             "probability adds up to P (nucleus)")
    p.add_argument("--seed", type=int, default=None, help="seed for the sampler: the same seed gives the same text")
    p.add_argument("--backend", default="auto", choices=["auto", *BACKENDS],
                   help="auto (the fastest installed: tflite, onnx, then numpy), or one backend")
    p.add_argument("--precision", default="float32", choices=list(PRECISIONS), help="float32 (or float), int8, int8-full")
    p.add_argument("--stream", action="store_true", help="print characters as they are produced (one text only)")
    p.add_argument("--num-samples", type=int, default=1,
                   help="texts to write, as one batch (seeds S, S+1, ...; at most 4096)")
    p.add_argument("--stop", action="append", default=None, metavar="STR",
                   help="stop a text once it ends with STR (kept in the output); may be given more than once")
    p.add_argument("--stats", action="store_true", help="print chars/s and µs per character to stderr")
    p.add_argument("--verbose", action="store_true", help="say which backend and artifact run, and show the "
                   "interpreters' own log lines")
    p.add_argument("--no-echo", dest="echo", action="store_false", help="do not print the prime")
    p.add_argument("--skip-unknown", action="store_true", help="drop prime characters outside the vocabulary")
    p.add_argument("--threads", type=int, default=None, help="threads per step, at most the number of cores "
                   "(default: one per core for tflite and onnx, one for numpy's BLAS)")
    p.set_defaults(handler=generate)

    p = subparsers.add_parser("inspect", help="print an export's manifest: vocabulary, shapes, artifacts, parity",
                              description="Print an export's manifest and verify its files.")
    p.add_argument("export_dir", metavar="DIR")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the sha256 check of every file")
    p.set_defaults(handler=inspect)


def generate(args):
    from .generator import Generator

    if args.num_samples < 1:
        raise EstellaError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.stream and args.num_samples > 1:
        raise EstellaError(f"--stream writes one text as it is made; with --num-samples {args.num_samples} leave "
                           "out --stream (the texts are written when they are done)")
    if args.verbose:
        show_library_logs()
    gen = Generator.load(args.export_dir, backend=args.backend, precision=args.precision, num_threads=args.threads)
    if args.verbose:
        b = gen.backend
        print(f"backend: {b.name} {b.precision} ({'chosen by auto: ' if args.backend == 'auto' else ''}"
              f"{type(b).__name__}, V={b.vocab_size} S={b.state_size})", file=sys.stderr)
    settings = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                    stop=args.stop, echo=args.echo, skip_unknown=args.skip_unknown)
    primes = [args.prime] * args.num_samples
    steps = gen.stream_many(primes, args.chars, **settings)  # checks every setting before any work
    out = Output(sys.stdout)
    start, produced = time.perf_counter(), 0
    texts = [[] for _ in primes]
    prime_len = len(gen.encode(args.prime, args.skip_unknown)[0]) if args.echo else 0
    for n, chars in enumerate(steps):
        if n >= prime_len:
            produced += sum(1 for c in chars if c)
        if args.stream:
            out.write(chars[0], flush=True)
        else:
            for text, ch in zip(texts, chars):
                text.append(ch)
    elapsed = time.perf_counter() - start
    if not args.stream:
        for i, text in enumerate(texts):
            if args.num_samples > 1:
                out.write(f"--- sample {i + 1} (seed {args.seed + i if args.seed is not None else 'random'}) ---\n")
            out.write("".join(text) + "\n")
    else:
        out.write("\n")
    out.flush()
    if args.stats:
        per_char = elapsed / max(produced, 1)
        print(f"{gen.backend.name} {gen.backend.precision}: {produced} chars in {elapsed:.3f} s, "
              f"{produced / elapsed if elapsed else 0:.1f} chars/s, {per_char * 1e6:.1f} µs/char "
              f"(batch {args.num_samples}, prime {len(args.prime)} chars included in the time)", file=sys.stderr)


class Output:
    """stdout for the text, with its failures as OutputError (exit 2 with a message): a full disk
    (/dev/full) or an encoding that cannot show a character. A closed pipe stays BrokenPipeError,
    which the CLI turns into a quiet exit."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text, flush=False):
        if self.stream is None:  # started with stdout closed (`estella ... >&-`)
            raise OutputError("standard output is closed: nothing can be written")
        try:
            self.stream.write(text)
            if flush:
                self.stream.flush()
        except UnicodeEncodeError as e:
            raise OutputError(f"standard output's encoding ({e.encoding}) cannot show {e.object[e.start:e.end]!r}: "
                              "use a UTF-8 locale or set PYTHONIOENCODING=utf-8") from None
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputError(f"cannot write the text to standard output: {e.strerror or e}",
                              discard_stdout=True) from None

    def flush(self):
        self.write("", flush=True)


def inspect(args):
    """Print the manifest; exit 2 on anything generate would refuse. With verification (the default),
    every file's size and sha256 is checked, and each step artifact whose interpreter is installed is
    loaded and its shapes checked against the manifest; the output says which were, and which not."""
    import os

    from .backends import backend_for, open_backend
    from .errors import MissingDependency
    from .manifest import load_manifest

    escape_unencodable(sys.stdout)  # an ASCII-only terminal gets \u escapes, not an error
    out = Output(sys.stdout)

    def say(line):  # everything here may come from the manifest: its control characters made visible
        out.write(printable(line) + "\n")

    m = load_manifest(args.export_dir, verify=args.verify)  # structure and paths always; sha256 with verify
    model = m["model"]
    say(f"export: {os.path.abspath(args.export_dir)} (schema {m['schema_version']}, {m.get('kind', '?')})")
    units = "/".join(str(layer["units"]) for layer in model["layers"])
    say(f"model: vocab_size={model['vocab_size']} embedding_dim={model.get('embedding_dim')} "
        f"cell={model['cell']} layers={len(model['layers'])} units={units} state_size={model['state_size']}")
    say(f"vocab: {''.join(model['vocab'])!r}")
    state = m.get("state")
    if isinstance(state, dict):
        say(f"state: {state.get('name')} {state.get('shape')} {state.get('dtype')} initial={state.get('initial')}")
    say("artifacts:")
    loaded, not_loaded, refused = [], [], []
    for a in m["artifacts"]:
        size = sum(f["bytes"] for f in a["files"])
        say(f"  {a['name']:<18} {a['format']:<10} {a['precision']:<8} {a.get('role', 'step'):<7} "
              f"{_size(size):>9}  {a['path']}")
        if a.get("inputs") and a.get("outputs"):
            say(f"      in:  {_specs(a['inputs'])}")
            say(f"      out: {_specs(a['outputs'])}")
        if not args.verify:
            continue
        known = a["format"] in {fmt for _, _, fmt in BACKENDS.values()} and a["precision"] in PRECISIONS
        backend = backend_for(a) if known else None
        if backend is None or a.get("role", "step") != "step":
            not_loaded.append(f"{a['name']} (not a step artifact this runtime runs)")
            continue
        try:
            open_backend(args.export_dir, backend, a["precision"], manifest=m)
            loaded.append(a["name"])
        except MissingDependency as e:
            not_loaded.append(f"{a['name']} ({e})")
        except EstellaError as e:
            refused.append(f"{a['name']}: {e}")
            say(f"      REFUSED: {e}")
    parity = m.get("parity")
    if isinstance(parity, dict):
        say(f"parity (tolerance {parity.get('tolerance')}):")
        for name, numbers in (parity.get("artifacts") or {}).items():
            say(f"  {name:<18} {_flat(numbers)}")
    prov = m.get("provenance")
    if isinstance(prov, dict):
        say("provenance:")
        for key, value in prov.items():
            say(f"  {key}: {_flat(value)}")
    if not args.verify:
        say("not verified (--no-verify): neither the files' sha256 nor the artifacts' shapes were checked")
        out.flush()
        return
    say(f"files verified: the size and sha256 of all {sum(len(a['files']) for a in m['artifacts'])} files")
    say(f"loaded, shapes agree with the manifest: {', '.join(loaded) or 'none'}")
    if not_loaded:
        say(f"not loaded, shapes not checked: {', '.join(not_loaded)}")
    out.flush()
    if refused:
        raise EstellaError(f"{args.export_dir}: {len(refused)} artifact(s) refused: " + "; ".join(refused))


def _specs(specs):
    return ", ".join(f"{s['name']} {s['shape']} {s['dtype']}" for s in specs)


def _size(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _flat(value, prefix=""):
    """A nested dict on one line: {"a": {"b": 0.12345}, "c": 1} -> "a.b=0.1235 c=1"."""
    if isinstance(value, dict):
        return " ".join(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else f"{prefix}{k}={_flat(v)}"
                        for k, v in value.items())
    return f"{value:.4g}" if isinstance(value, float) else str(value)
