"""The `estella` command: a small dispatcher. Only the module of the command being run is imported,
so `estella generate` starts fast and never imports TensorFlow or the training, export and bench
stages; `estella --help` still lists every command from the table below."""

import argparse
import importlib
import importlib.util
import os
import sys

from .errors import EstellaError, SettingError
from .terminal import printable

# command -> (module whose add_parser(subparsers) defines it, one line of help, pip extra it needs)
COMMANDS = {
    "train": ("estella.build.cli", "train a model on a corpus (or resume a run)", "train"),
    "prepare": ("estella.build.prepare_cli", "turn text files into a prepared corpus for training at scale", "train"),
    "import": ("estella.build.import_cli", "turn a Keras .keras/.h5 model or a TensorFlow checkpoint into a run",
               "train"),
    "sample": ("estella.build.cli", "sample text from a run with the Keras reference model", "train"),
    "export": ("estella.export.cli", "write SavedModel, TFLite, ONNX and numpy artifacts of a run", "train"),
    "generate": ("estella.runtime.commands", "write text with an exported model (no TensorFlow needed)", None),
    "inspect": ("estella.runtime.commands", "print and verify an export's manifest", None),
    "evaluate": ("estella.runtime.evaluate", "loss in bits per character of an export on a text", None),
    "serve": ("estella.serve.cli", "serve an export over HTTP (OpenAI-style completions, streaming)", "serve"),
    "bench": ("estella.bench.cli", "benchmark training and generation (writes BENCHMARKS.md)", "train"),
    "quality": ("estella.bench.quality", "compare trained runs' validation loss (writes QUALITY.md)", "train"),
}
# Libraries whose absence means "install the extra", not a bug.
EXTRA_LIBRARIES = ("tensorflow", "keras", "tf2onnx", "onnx", "matplotlib", "fastapi", "uvicorn",
                   "starlette", "prometheus_client", "jax")
# What an extra must bring for its commands to run at all; checked before the command starts, so
# that a runtime-only install refuses `estella bench` at once rather than running part of it.
EXTRA_NEEDS = {"train": ("tensorflow", "keras"), "serve": ("fastapi", "uvicorn")}
SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for `cat` when the reader of its pipe went away


def make_parser(command=None):
    """The parser with every command listed; only `command` (if given) is defined in full."""
    parser = argparse.ArgumentParser(prog="estella", description="Train a char-level GRU, export it as step "
                                     "graphs, and generate text with it.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command][0]).add_parser(subparsers)
    for name, (_, help_text, _) in COMMANDS.items():
        if name not in subparsers.choices:
            subparsers.add_parser(name, help=help_text, add_help=False)
    return parser


def missing_library(extra):
    """The first library the extra brings that is not installed, or None."""
    for name in EXTRA_NEEDS.get(extra, ()):
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):  # ValueError: hidden (sys.modules[name] is None)
            return name
    return None


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter hides our output
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = make_parser(command)
        args = parser.parse_args(argv)
        if not hasattr(args, "handler"):  # a command this install lacks (its module defines no parser)
            raise ModuleNotFoundError(name=COMMANDS[args.command][0])
        missing = missing_library(COMMANDS[args.command][2])
        if missing:
            raise ModuleNotFoundError(name=missing)
        return args.handler(args) or 0
    except BrokenPipeError:
        # The reader went away (`estella generate ... | head`): stop quietly, as Unix tools do. Point
        # stdout at /dev/null so that Python's own flush at exit does not fail again (Python docs,
        # "Note on SIGPIPE").
        discard_stdout()
        return SIGPIPE_EXIT
    except EstellaError as e:
        if getattr(e, "discard_stdout", False):
            discard_stdout()
        print(printable(f"estella {command}: error: {cli_message(e)}", keep_newlines=True), file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        extra = COMMANDS.get(command, (None, None, None))[2]
        if missing in EXTRA_LIBRARIES or (e.name or "").startswith("estella."):
            print(f"estella {command}: error: this command needs {e.name}, which is not installed: "
                  f"pip install 'estella[{extra or 'train'}]'", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print(f"estella {command}: interrupted", file=sys.stderr)
        return 130


def cli_message(error):
    """The error as the CLI words it: a setting is named by its flag (field top_k: --top-k)."""
    if isinstance(error, SettingError):
        return error.worded(lambda field: "--" + field.replace("_", "-"))
    return str(error)


def discard_stdout():
    """Send what is left in stdout's buffer, and anything later, to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test's captured stdout)
        pass


if __name__ == "__main__":
    sys.exit(main())
