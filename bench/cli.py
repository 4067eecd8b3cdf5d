"""`estella bench`: time training and generation against the original recipe and the hardware limit."""

from .suite import SECTIONS


def add_parser(subparsers):
    p = subparsers.add_parser("bench", help="benchmark training and generation (writes BENCHMARKS.md, bench.json, bench.png)",
                              description="Run every benchmark side by side and write BENCHMARKS.md, bench.json and "
                              "bench.png. BENCHMARKS.md's header gives how long the last full run took.")
    p.add_argument("--quick", action="store_true",
                   help="fewer rounds and steps, for development (a few minutes); writes to .cache/bench/quick/ "
                        "unless --out is given")
    p.add_argument("--out", default=None, help="folder for the three files (default: the repository root for a "
                   "full run; .cache/bench/quick/ or .cache/bench/partial/ for --quick or --only)")
    p.add_argument("--corpus", default=None, help="text for the training benchmark and the vocabulary "
                   "(default: ../shared/data/great-expectations.txt if present, else the Gutenberg URL)")
    p.add_argument("--threads", type=int, default=1, help="threads per library for generation (default: %(default)s)")
    p.add_argument("--only", default=",".join(SECTIONS), metavar="PARTS",
                   help=f"comma-separated parts to run (default: all of {','.join(SECTIONS)})")
    p.set_defaults(handler=run_bench)


def run_bench(args):
    from estella.runtime.errors import EstellaError

    from .suite import run

    sections = [s for s in args.only.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise EstellaError(f"--only has unknown parts {unknown}; choose from {', '.join(SECTIONS)}")
    if args.threads < 1:
        raise EstellaError(f"--threads must be >= 1, got {args.threads}")
    run(out_dir=args.out, quick=args.quick, corpus=args.corpus, threads=args.threads, sections=sections)
