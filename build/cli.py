"""`estella train` and `estella sample`."""

import argparse
import os
import sys

from .config import PRESETS, HParams, preset
from .quiet import import_tensorflow
from .scale_cli import add_scale_arguments, scale_options

DEFAULT_RUNS = "runs"


def add_parser(subparsers):
    p = subparsers.add_parser("train", help="train a model on a corpus (or resume a run)",
                              description="Train a char-level GRU or LSTM stack. Rerunning on a run directory resumes it.")
    p.add_argument("run_dir", nargs="?", help=f"the run directory (default: {DEFAULT_RUNS}/<preset>)")
    p.add_argument("--corpus", default=None, help="URL or local path of a UTF-8 text (default: Great "
                   "Expectations from Project Gutenberg, cached)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="hyper-parameter preset (default: default; on resume, the run's own)")
    p.add_argument("--cache-dir", default=None, help="where downloaded corpora are kept (default ~/.cache/estella)")
    p.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar "
                   "(always so when stdout is not a terminal)")
    p.add_argument("--verbose", action="store_true", help="show TensorFlow's own start-up log lines")
    add_scale_arguments(p)
    p.add_argument("--cell", default=None, metavar="gru|lstm", help="the recurrent cell of every layer")
    p.add_argument("--units", type=units_argument, default=None, metavar="U[,U...]",
                   help="units of every layer, or a comma list with one per layer")
    for field in HParams.__dataclass_fields__.values():
        if field.name in ("cell", "units"):
            continue
        kind = float if field.type is float else int
        p.add_argument("--" + field.name.replace("_", "-"), type=kind, default=None,
                       metavar="P" if field.name == "dropout" else "N",
                       help=f"override the preset's {field.name}")
    p.set_defaults(handler=run_train)

    s = subparsers.add_parser("sample", help="sample text from a run with the Keras reference model")
    s.add_argument("run_dir", help="a run directory written by `estella train`")
    s.add_argument("--prime", default="Pip", help="text to start from (default: %(default)s)")
    s.add_argument("--chars", type=int, default=500, help="characters to generate (default: %(default)s)")
    s.add_argument("--temperature", type=float, default=0.5, help=">= 0; lower is more conservative, 0 is greedy")
    s.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    s.add_argument("--verbose", action="store_true", help="show TensorFlow's own start-up log lines")
    s.set_defaults(handler=run_sample)


def units_argument(text):
    """--units 512 or --units 512,256: a list of ints (their range is HParams.check's)."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or a comma list of them (one per layer), "
                                         f"got {text!r}") from None


def run_train(args):
    from .corpus import DEFAULT_CORPUS

    overrides = {name: getattr(args, name) for name in HParams.__dataclass_fields__}
    run_dir = args.run_dir or os.path.join(DEFAULT_RUNS, args.preset or "default")
    try:
        preset(args.preset or "default", **overrides)  # check the flags before the slow TensorFlow import
    except ValueError as e:  # hyper-parameter checks name their flag
        raise _usage_error(e) from None
    check_before_tensorflow(run_dir, args)
    import_tensorflow(args.verbose)
    from .train import train
    train(run_dir, args.corpus or DEFAULT_CORPUS, args.preset, cache_dir=args.cache_dir,
          verbose=2 if args.quiet or not sys.stdout.isatty() else 1,  # 2: a line per epoch
          **scale_options(args), **overrides)


def check_before_tensorflow(run_dir, args):
    """The cheap checks of train(): files and folders, answered in a blink instead of after the
    import of TensorFlow. train() makes them again (it is an API too)."""
    from .corpus import is_url
    from .errors import CorpusError
    from .runfolder import check_ownership

    check_ownership(run_dir)
    data = getattr(args, "data", None)
    if not data and args.corpus and not is_url(args.corpus) and not os.path.isfile(args.corpus):
        raise CorpusError(f"corpus file not found: {args.corpus} (give a local path or an http(s) URL)")
    if data and not os.path.isdir(data):
        raise CorpusError(f"--data {data} is not a folder; make one with `estella prepare SOURCE... --out DIR`")


def run_sample(args):
    from estella.runtime.sampling import check_settings

    import_tensorflow(args.verbose)
    from .sample import generate_text, load_reference

    if args.chars < 0:
        raise _usage_error(f"--chars must be >= 0, got {args.chars}")
    check_settings(args.temperature)  # the runtime's rules, before the slow load
    if not args.prime:
        raise _usage_error("--prime must have at least one character")
    model, vocab, _ = load_reference(args.run_dir, batch_size=1)
    unknown = sorted(set(args.prime) - set(vocab.chars))
    if unknown:
        raise _usage_error(f"--prime has characters that are not in the vocabulary of {args.run_dir}: {unknown!r}")
    print(generate_text(model, vocab, args.prime, args.chars, args.temperature, args.seed))


def _usage_error(message):
    from estella.runtime.errors import EstellaError
    return EstellaError(str(message))
