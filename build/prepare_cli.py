"""`estella prepare`: the command line of build/prepare.py."""


def add_parser(subparsers):
    p = subparsers.add_parser("prepare", help="encode text files, URLs, folders or globs into train.bin/val.bin",
                              description="Encode a corpus once into DATA_DIR (train.bin, val.bin, vocab.json, "
                              "meta.json) for `estella train --data DATA_DIR`. Each file's Gutenberg header and "
                              "footer are cut and its last --validation-fraction is held out.")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="a UTF-8 file, an http(s) URL, a folder (its .txt "
                   "files, recursively) or a glob such as 'books/*.txt'")
    p.add_argument("--out", required=True, metavar="DATA_DIR", help="the folder to write")
    p.add_argument("--validation-fraction", type=float, default=0.1, metavar="F",
                   help="the tail of each file held out for validation (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace an existing prepared DATA_DIR")
    p.add_argument("--cache-dir", default=None, help="where downloaded sources are kept (default ~/.cache/estella)")
    p.set_defaults(handler=run_prepare)


def run_prepare(args):
    from .prepare import prepare

    prepare(args.sources, args.out, args.validation_fraction, args.force, args.cache_dir)
