"""`estella import`: the command line of build/importer.py."""


def add_parser(subparsers):
    p = subparsers.add_parser(
        "import", help="turn a Keras .keras/.h5 model or a TensorFlow checkpoint into a run directory",
        description="Read an Embedding -> GRU/LSTM (1 to 4 layers) -> Dense model trained elsewhere and write a run "
                    "directory that `estella export`, `estella sample` and `estella train --init-from` accept.")
    p.add_argument("source", metavar="SOURCE", help="a Keras 3 .keras file, a Keras 2 .h5 file, or a TensorFlow "
                   "checkpoint written by tf-keras: a folder (its latest checkpoint) or a checkpoint prefix")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory to write (must not exist, or be empty)")
    p.add_argument("--vocab", required=True, metavar="VOCAB", help="a .json list of characters, or the training "
                   "text (its sorted(set(text)) is the vocabulary, as the chapter builds it)")
    p.set_defaults(handler=run_import)


def run_import(args):
    from .importer import import_model

    import_model(args.source, args.run_dir, args.vocab)
