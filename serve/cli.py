"""`estella serve EXPORT_DIR`: the flags; server.py runs it."""

import os
import sys

from estella.runtime.errors import EstellaError

from .chat import ChatTemplate
from .cpus import parse_cpus
from .engine import EngineFailed
from .limits import Limits
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
    p.add_argument("--engine", default=None, choices=["process", "thread"],
                   help="where the model's scheduler runs: its own process (default; the model and the HTTP side "
                   "then do not share one interpreter lock) or a thread of the server's (one process, less memory)")
    p.add_argument("--engine-cpus", default=None, metavar="CPUS", help="run the engine process on these CPUs "
                   "(as 0, 0-1 or 0,2-3; Linux) and the HTTP side on the others, so that they never take turns "
                   "on a core (default: the OS decides)")
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
    p.add_argument("--chat-template", default=None, metavar="FILE", help="how /v1/chat/completions writes the "
                   "messages into a prime: a JSON file of strings per role with {content}, and \"generation\" "
                   "(default: each message a paragraph; see the README)")
    p.add_argument("--metrics-need-key", action="store_true", help="/metrics asks for the --api-key too")
    limits = p.add_argument_group("limits on one request (a request past one answers 400 naming it)")
    for field, help_text in (("max_stop", "stop strings"), ("max_stop_chars", "characters per stop string"),
                             ("max_prompt_chars", "characters per prompt (a chat's rendered messages)"),
                             ("max_request_chars", "prompts x n x max_tokens"),
                             ("max_logprobs", "logprobs (completions), top_logprobs (chat)"),
                             ("max_json_depth", "nesting of the JSON body"), ("max_body_bytes", "bytes of the body")):
        limits.add_argument(Limits.FLAGS[field], type=int, default=getattr(Limits, field), metavar="N",
                            help=f"{help_text} (default: %(default)s)")
    connections = p.add_argument_group("connections")
    connections.add_argument("--timeout-keep-alive", type=float, default=5.0, metavar="S",
                             help="close a connection idle this long after a response (default: %(default)s)")
    connections.add_argument("--timeout-header", type=float, default=10.0, metavar="S",
                             help="close a connection that has not sent a whole request head this long "
                             "(default: %(default)s)")
    connections.add_argument("--max-connections", type=int, default=1000, metavar="N",
                             help="open connections at most; more are closed at once (default: %(default)s)")
    add_ray_arguments(p)
    p.set_defaults(handler=serve)


def add_ray_arguments(p):
    """The flags that run the server on Ray Serve (ray_serve.py) instead of one process."""
    ray = p.add_argument_group("Ray Serve (pip install 'estella[ray]')", "Any of these serves the export "
                               "from replicas on a Ray cluster, each with its own engine; Ray's proxy answers "
                               "on --host:--port and routes each request to a replica.")
    ray.add_argument("--replicas", type=int, default=None, metavar="N", help="run N replicas (a fixed number)")
    ray.add_argument("--min-replicas", type=int, default=None, metavar="N", help="autoscaling: at least N "
                     "replicas (default: 1; giving --max-replicas turns autoscaling on)")
    ray.add_argument("--max-replicas", type=int, default=None, metavar="N", help="autoscaling: at most N replicas")
    ray.add_argument("--target-ongoing-requests", type=float, default=None, metavar="R", help="autoscaling: "
                     "the requests per replica (running and waiting) Ray scales towards (default: --max-batch)")
    ray.add_argument("--ray-address", default=None, metavar="ADDRESS", help="join this Ray cluster ('auto': the "
                     "one this machine belongs to) instead of starting a local one on 127.0.0.1; --host and --port "
                     "apply if Serve is not running there yet")


def serve(args):
    app_options = check_args(args)
    if wants_ray(args):
        try:
            from .ray_serve import run_on_ray
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] != "ray":
                raise
            raise EstellaError("--replicas and the other Ray Serve flags need Ray Serve: "
                               "pip install 'estella[ray]'") from None
        run_on_ray(args, app_options)
        return 0
    try:
        run_server(args.export_dir, host=args.host, port=args.port, backend=args.backend, precision=args.precision,
                   threads=args.threads, engine=args.engine or "process", engine_cpus=args.engine_cpus,
                   max_batch=args.max_batch, max_queue=args.max_queue, max_chars=args.max_chars,
                   shutdown_timeout=args.shutdown_timeout, timeout_keep_alive=args.timeout_keep_alive,
                   timeout_header=args.timeout_header, max_connections=args.max_connections, **app_options)
    except EngineFailed as e:  # not bad input: exit 1, for a supervisor to restart the server
        print(f"estella serve: error: {e}; stopped so that a supervisor can restart it", file=sys.stderr)
        return 1
    return 0


def wants_ray(args):
    return any(getattr(args, flag) is not None for flag in
               ("replicas", "min_replicas", "max_replicas", "target_ongoing_requests", "ray_address"))


def check_args(args):
    """Refuse bad flags (an EstellaError naming the flag); returns the HTTP app's options from them
    (create_app's keyword arguments: model_name, api_keys, ..., limits, chat_template)."""
    for flag, value, low in (("--threads", args.threads, 1), ("--max-batch", args.max_batch, 1),
                             ("--max-queue", args.max_queue, 0), ("--max-chars", args.max_chars, 0),
                             ("--port", args.port, 1), ("--shutdown-timeout", args.shutdown_timeout, 0),
                             ("--timeout-keep-alive", args.timeout_keep_alive, 0.001),
                             ("--timeout-header", args.timeout_header, 0.001),
                             ("--max-connections", args.max_connections, 1)):
        if value is not None and value < low:
            raise EstellaError(f"{flag} must be >= {low}, got {value}")
    try:
        limits = Limits(**{field: getattr(args, field) for field in Limits.FLAGS})
    except ValueError as e:
        raise EstellaError(str(e)) from None
    chat_template = ChatTemplate.load(args.chat_template)
    if args.engine_cpus is not None:
        if args.engine == "thread":
            raise EstellaError("--engine-cpus places the engine process; with --engine thread there is none")
        args.engine_cpus = parse_cpus(args.engine_cpus)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"estella serve: warning: binding {args.host} without --api-key: anyone who can reach this "
              "machine can use the server", file=sys.stderr)
    if not os.path.isfile(os.path.join(args.export_dir, "manifest.json")):
        raise EstellaError(f"{args.export_dir} is not an export directory (it has no manifest.json)")
    if wants_ray(args):
        check_ray_args(args)
    name = args.model_name or os.path.basename(os.path.normpath(os.path.abspath(args.export_dir)))
    return {"model_name": name, "api_keys": args.api_key, "cors_origins": args.cors_origin, "limits": limits,
            "chat_template": chat_template, "metrics_need_key": args.metrics_need_key}


def check_ray_args(args):
    for flag in ("engine", "engine_cpus"):
        if getattr(args, flag, None) is not None:
            raise EstellaError(f"--{flag.replace('_', '-')} applies to the single server: a Ray replica runs its "
                               "engine as a thread of the replica's own process")
    for flag, value, low in (("--replicas", args.replicas, 1), ("--min-replicas", args.min_replicas, 0),
                             ("--max-replicas", args.max_replicas, 1)):
        if value is not None and value < low:
            raise EstellaError(f"{flag} must be >= {low}, got {value}")
    if args.target_ongoing_requests is not None and not args.target_ongoing_requests > 0:
        raise EstellaError(f"--target-ongoing-requests must be > 0, got {args.target_ongoing_requests}")
    autoscaling = (args.min_replicas, args.max_replicas, args.target_ongoing_requests) != (None, None, None)
    if autoscaling and args.replicas is not None:
        raise EstellaError("--replicas (a fixed number) and --min-replicas/--max-replicas/--target-ongoing-requests "
                           "(autoscaling) exclude each other: give one or the other")
    if autoscaling and args.max_replicas is None:
        raise EstellaError("autoscaling needs --max-replicas")
    if autoscaling and (args.min_replicas or 1) > args.max_replicas:
        raise EstellaError(f"--min-replicas ({args.min_replicas}) must be <= --max-replicas ({args.max_replicas})")
