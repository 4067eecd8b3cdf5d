"""The `estella` command. Each stage adds its own subcommands; heavy imports wait for the handler,
so `estella generate` starts fast and works where TensorFlow is not installed."""

import argparse
import importlib
import os
import sys

from .errors import EstellaError, MissingDependency

# Modules that define add_parser(subparsers); a stage that is not importable is skipped.
COMMAND_MODULES = ("estella.build.cli", "estella.build.prepare_cli", "estella.export.cli", "estella.runtime.commands", "estella.bench.cli")


def make_parser():
    parser = argparse.ArgumentParser(prog="estella", description=__doc__.split(".")[0] + ".")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):  # the stage itself is absent, not one of its imports
                continue
            raise
        module.add_parser(subparsers)
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides our output
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except MissingDependency as e:
        print(f"estella {args.command}: error: {e}", file=sys.stderr)
        return 2
    except EstellaError as e:
        print(f"estella {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "onnx", "matplotlib"):
            print(f"estella {args.command}: error: this command needs {e.name}, which is not installed: "
                  "pip install 'estella[train]'", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print(f"estella {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
