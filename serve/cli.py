"""`estella serve EXPORT_DIR`: the flags; server.py runs it."""

import os
import sys

from estella.runtime.errors import EstellaError

from .server import run_server


def add_parser(subparsers):
    p = subparsers.add_parser("serve", help="serve an export over HTTP (OpenAI-style completions, streaming)",
                              description="Serve an export to many users at once: continuous batching, "
                              "streaming, an OpenAI-compatible /v1/completions, /health, /metrics and a web page.")
    p.add_argument("export_dir", help="the export directory (estella export's output)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--backend", default="auto", choices=["auto", "tflite", "onnx", "numpy"],
                   help="the interpreter (default: auto)")
    p.add_argument("--precision", default="float32", choices=["float32", "int8"], help="(default: float32)")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads (tflite, onnx; default: one per core)")
    p.add_argument("--max-batch", type=int, default=32, help="streams stepped together at most (default: 32)")
    p.add_argument("--max-queue", type=int, default=256, help="streams waiting for a slot at most; more get 503 "
                   "(default: 256)")
    p.add_argument("--max-chars", type=int, default=4096, help="the largest max_tokens a request may ask "
                   "(default: 4096)")
    p.add_argument("--api-key", nargs="+", default=[], metavar="KEY", help="require 'Authorization: Bearer KEY' "
                   "(one of these) on /v1/*")
    p.add_argument("--cors-origin", nargs="+", default=[], metavar="ORIGIN", help="origins whose pages may call "
                   "the API (CORS)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="S", help="on SIGTERM, how long running "
                   "requests may go on (default: 30)")
    p.add_argument("--model-name", default=None, help="the model's name in the API (default: the export folder's "
                   "name)")
    p.set_defaults(handler=serve)


def serve(args):
    for flag, value, low in (("--threads", args.threads, 1), ("--max-batch", args.max_batch, 1),
                             ("--max-queue", args.max_queue, 0), ("--max-chars", args.max_chars, 0),
                             ("--port", args.port, 1), ("--shutdown-timeout", args.shutdown_timeout, 0)):
        if value is not None and value < low:
            raise EstellaError(f"{flag} must be >= {low}, got {value}")
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"estella serve: warning: binding {args.host} without --api-key: anyone who can reach this "
              "machine can use the server", file=sys.stderr)
    if not os.path.isfile(os.path.join(args.export_dir, "manifest.json")):
        raise EstellaError(f"{args.export_dir} is not an export directory (it has no manifest.json)")
    name = args.model_name or os.path.basename(os.path.normpath(os.path.abspath(args.export_dir)))
    run_server(args.export_dir, host=args.host, port=args.port, backend=args.backend, precision=args.precision,
               threads=args.threads, max_batch=args.max_batch, max_queue=args.max_queue, max_chars=args.max_chars,
               api_keys=args.api_key, cors_origins=args.cors_origin, shutdown_timeout=args.shutdown_timeout,
               model_name=name)
    return 0
