"""`estella evaluate`: an export's loss on a text, teacher-forced, in nats and bits per character.

The text runs as ONE stream from the zero state with the true character fed at every step, so
character t+1 is scored on its prediction after all t characters before it, and every artifact
sees exactly the same inputs. Calls of CHUNK characters carry the state from one to the next, so
the chunking changes nothing. (Cutting the text into B pieces run as a batch would be B times
faster, but each piece would start from the zero state without its context: another, larger
number, and one that would depend on B.)

The manifest names the export's validation text (provenance.validation_text, written by `estella
export`: the corpus file, its sha256, and which characters of it). That file lies outside the export
and is never opened on the manifest's word: given on the command line (--text FILE) and found to be
that corpus by its sha256, its validation characters are used, so that the numbers match the bpc in
the manifest's parity section.
"""

import sys
import time

import numpy as np

from .errors import EstellaError
from .terminal import escape_unencodable, printable
from .untrusted_files import UntrustedFileError, read_file

CHUNK = 1024  # characters per backend call
MAX_TEXT_BYTES = 256 << 20  # a text this long takes hours to evaluate; a larger one is refused, not read


class EvaluateError(EstellaError):
    """No text to evaluate on, or a text the model cannot read."""


def bits_per_char(logits, targets) -> float:
    """Mean cross-entropy of logits [N, V] for the next ids targets [N], in bits (float64)."""
    return nats_per_char(logits, targets) / np.log(2)


def nats_per_char(logits, targets) -> float:
    total, count = _nats(np.asarray(logits, np.float64), np.asarray(targets))
    return total / count if count else float("nan")


def _nats(logits, targets):
    """(sum of -log softmax(logits)[target], count) over the rows of logits [N, V]."""
    top = logits.max(axis=-1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))
    return float(np.sum(log_norm - logits[np.arange(len(targets)), targets])), len(targets)


def teacher_forced(backend, ids, chunk=CHUNK) -> dict:
    """Loss of ids [N] (N >= 2) through a backend: {"chars", "nats", "bpc", "seconds"} over the N - 1 predictions."""
    ids = np.asarray(ids, np.int32)
    if len(ids) < 2:
        raise EvaluateError(f"the text has {len(ids)} characters; at least 2 are needed (one to predict)")
    start = time.perf_counter()
    state, total, count = backend.initial_state(1), 0.0, 0
    for first in range(0, len(ids) - 1, chunk):
        inputs = ids[first:first + chunk]
        targets = ids[first + 1:first + 1 + chunk]
        logits, state = backend.step(inputs[None, :len(targets)], state)
        part, n = _nats(np.asarray(logits[0], np.float64), targets)
        total, count = total + part, count + n
    nats = total / count
    return {"chars": int(len(ids)), "nats": nats, "bpc": nats / np.log(2), "seconds": time.perf_counter() - start}


def encode(text, vocab, label, skip_unknown=False):
    """ids [N] of text in the vocabulary; characters outside it are refused, or dropped with skip_unknown."""
    index = {c: i for i, c in enumerate(vocab)}
    unknown = sorted(set(text) - index.keys())
    if unknown and not skip_unknown:
        shown = "".join(unknown[:20])
        raise EvaluateError(f"{label} has {len(unknown)} characters that are not in the model's vocabulary: "
                            f"{shown!r}{' ...' if len(unknown) > 20 else ''} (drop them with --skip-unknown)")
    return np.array([index[c] for c in text if c in index], np.int32)


def decode_text(raw: bytes) -> str:
    """UTF-8 bytes as the corpus loader reads them: a BOM dropped, CRLF line ends as LF. The
    validation text's place in the file (export/validation.py) is counted in this text."""
    return raw.decode("utf-8-sig").replace("\r\n", "\n")


def read_text(path) -> tuple:
    """(text, sha256 of its bytes) of the file named by --text: a regular file of at most MAX_TEXT_BYTES,
    read once (a huge or sparse file is refused before it is read, a FIFO never hangs)."""
    try:
        raw, digest = read_file(path, what=f"--text {path}", max_bytes=MAX_TEXT_BYTES)
    except UntrustedFileError as e:
        raise EvaluateError(f"{e} (give a UTF-8 text file of at most {MAX_TEXT_BYTES >> 20} MB)") from None
    try:
        return decode_text(raw), digest
    except UnicodeDecodeError as e:
        raise EvaluateError(f"--text {path} is not UTF-8 (byte {e.start})") from None


def evaluation_text(manifest, export_dir, text_path) -> tuple:
    """(text, description): the file the user named with --text, or the export's validation text in it
    when it is the corpus the manifest names (same sha256). The manifest's own path is never opened:
    a manifest could name any file, and the answer would tell whether it exists."""
    named = (manifest.get("provenance") or {}).get("validation_text")
    if text_path is None:
        if isinstance(named, dict) and isinstance(named.get("path"), str):
            raise EvaluateError(f"{export_dir}'s manifest names its validation text in {named['path']!r}, outside "
                                "the export; estella opens no file that a manifest names outside its folder: give "
                                f"it on the command line with --text {named['path']} (checked against the manifest's "
                                "sha256), or any text with --text FILE")
        raise EvaluateError(f"{export_dir}'s manifest names no validation text; give one with --text FILE")
    text, digest = read_text(text_path)
    if not (isinstance(named, dict) and named.get("sha256") == digest):
        return text, text_path
    start, chars = named.get("start"), named.get("chars")
    if not (isinstance(start, int) and isinstance(chars, int) and 0 <= start and 2 <= chars):
        raise EvaluateError(f"{export_dir}'s manifest: provenance.validation_text needs integer start >= 0 and "
                            f"chars >= 2, got {start!r} and {chars!r}")
    return text[start:start + chars], f"the validation text in {text_path} (from character {start})"


def add_parser(subparsers):
    from .backends import BACKENDS

    p = subparsers.add_parser(
        "evaluate", help="loss in bits per character of an export on a text",
        description="Run a text through an export's artifact, teacher-forced (the true character fed at every "
                    "step, one stream from the zero state), and print its loss in nats and bits per character.")
    p.add_argument("export_dir", metavar="EXPORT_DIR", help="an export directory (estella export RUN --out DIR)")
    p.add_argument("--text", metavar="FILE", default=None,
                   help="a UTF-8 text file; the corpus the manifest names (same sha256) gives its validation text")
    p.add_argument("--chars", type=int, default=None, metavar="N", help="use only the first N characters of the text")
    p.add_argument("--backend", default=None, choices=["auto", *BACKENDS], help="the backend (default auto)")
    p.add_argument("--precision", default=None, choices=["float32", "float", "int8"],
                   help="the artifact's precision (default float32)")
    p.add_argument("--all", action="store_true", help="one row per backend and precision the export holds")
    p.add_argument("--skip-unknown", action="store_true", help="drop characters outside the vocabulary")
    p.set_defaults(handler=evaluate_command)


def evaluate_command(args):
    from .backends import BACKENDS, find_artifact, open_backend
    from .commands import Output
    from .errors import MissingDependency
    from .manifest import load_manifest

    if args.all and (args.backend or args.precision):
        raise EvaluateError("--all runs every backend and precision; leave out --backend and --precision")
    if args.chars is not None and args.chars < 2:
        raise EvaluateError(f"--chars must be >= 2, got {args.chars}")
    manifest = load_manifest(args.export_dir, verify=False)  # open_backend verifies the files it opens
    text, source = evaluation_text(manifest, args.export_dir, args.text)
    ids = encode(text[:args.chars] if args.chars else text, manifest["model"]["vocab"],
                 args.text or "the validation text", args.skip_unknown)
    if args.all:
        rows = [(b, p) for p in ("float32", "int8", "int8-full") for b in BACKENDS if find_artifact(manifest, b, p)]
    else:
        rows = [(args.backend or "auto", args.precision or "float32")]
    escape_unencodable(sys.stdout)  # an ASCII-only terminal gets \u escapes, not an error
    out = Output(sys.stdout)
    out.write(printable(f"{source}: {len(ids)} characters, {len(ids) - 1} predictions, one stream teacher-forced") + "\n")
    out.write(f"{'backend':<11} {'precision':<9} {'nats/char':>9} {'bits/char':>9} {'seconds':>8}\n")
    for backend_name, precision in rows:
        try:
            backend = open_backend(args.export_dir, backend_name, precision, manifest=manifest)
        except MissingDependency as e:
            out.write(printable(f"{backend_name:<11} {precision:<9} not run: {e}") + "\n")
            continue
        result = teacher_forced(backend, ids)
        out.write(f"{backend.name:<11} {backend.precision:<9} {result['nats']:9.4f} {result['bpc']:9.4f} "
                  f"{result['seconds']:8.1f}\n", flush=True)
