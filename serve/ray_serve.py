"""estella on Ray Serve: each replica runs estella's own engine (continuous batching) behind the same
FastAPI app as `estella serve`; Ray's proxy routes each request to a replica and streams its
server-sent events back.

    estella serve runs/default/export --replicas 2            # a local Ray cluster on 127.0.0.1
    estella serve runs/default/export --max-replicas 4        # autoscaling on ongoing requests
    serve run estella.serve.ray_serve:app_builder export_dir=/models/default replicas=2   # any cluster

A replica loads the export in its constructor, so Ray routes nothing to it before the model is
ready; Ray's health check asks the engine (a scheduler that stopped fails it and Ray replaces the
replica). Every answer names the replica that gave it (header X-Estella-Replica); /metrics gathers
every replica's metrics, each series labelled with its replica.
"""

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import threading

import ray
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from ray import serve

from estella.runtime.errors import EstellaError
from estella.runtime.manifest import load_manifest

from .api import create_app
from .engine import Engine

APP_NAME = "estella"
REPLICA_HEADER = "x-estella-replica"
PROXY_CALLBACK = {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "estella.serve.ray_serve:proxy_middlewares"}
METRICS_TIMEOUT = 10.0  # s: /metrics answers without a replica that does not report by then


@serve.ingress()
class EstellaReplica:
    """One replica: an Engine on its own scheduler thread, served by create_app's FastAPI app."""

    def __init__(self, export_dir, engine_options, app_options):
        self.engine = Engine.load(export_dir, **engine_options)
        context = serve.get_replica_context()
        self.replica = context.replica_id.unique_id
        self.deployment, self.app_name = context.deployment, context.app_name
        self.app_options = app_options

    def __serve_build_asgi_app__(self):
        app = create_app(self.engine, **self.app_options)
        app.add_middleware(ReplicaMiddleware, replica=self.replica, gather_metrics=self.gather_metrics)
        self.metrics_registry = app.state.metrics.registry
        return app

    def check_health(self):
        """Ray calls this every health_check_period_s (10 s); raising makes Ray replace the replica."""
        if self.engine.failure is not None:
            raise RuntimeError(f"the engine stopped: {self.engine.failure!r}")

    def metrics_text(self):
        """(this replica's id, its metrics in Prometheus' text format)"""
        return self.replica, generate_latest(self.metrics_registry).decode()

    async def gather_metrics(self):
        handle = serve.get_deployment_handle(self.deployment, self.app_name)
        return merge_metrics(dict(await handle.broadcast("metrics_text").results_async(timeout_s=METRICS_TIMEOUT)))

    async def __del__(self):
        # Ray has let the running requests finish (graceful_shutdown_timeout_s): end what is left.
        await asyncio.to_thread(self.engine.shutdown)


class ReplicaMiddleware:
    """Adds the replica's id to every answer; where the app answers /metrics with 200 (its own
    rules: methods, key), the body becomes every replica's metrics."""

    def __init__(self, app, replica, gather_metrics):
        self.app, self.replica, self.gather_metrics = app, replica.encode(), gather_metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_replica(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (REPLICA_HEADER.encode(), self.replica)]
            await send(message)

        if scope["path"].removeprefix(scope.get("root_path", "")) != "/metrics":
            return await self.app(scope, receive, send_with_replica)
        answer = []

        async def keep(message):
            answer.append(message)

        await self.app(scope, receive, keep)
        start = answer[0]
        if start["status"] == 200:
            body = await self.gather_metrics()
            headers = [(k, v) for k, v in start.get("headers", ()) if k.lower() != b"content-length"]
            start = {**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
            answer = [start, {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}]
        for message in answer:
            await send_with_replica(message)


class ReplicaLost:
    """At Ray's proxy: a request whose replica died (or failed outside the app) before its answer
    was complete ends with estella's error shape instead of a cut connection: a 502 JSON error if
    nothing was sent yet, else a last server-sent event {"error": ...} (the openai client raises
    it as an APIError). Installed by proxy_middlewares()."""

    ERROR = {"message": "the replica serving this request stopped before its answer was complete; "
                        "try again (another replica takes it)", "type": "server_error", "code": "replica_lost"}

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seen = {"started": False, "sse": False, "ended": False}

        async def watch(message):
            if message["type"] == "http.response.start":
                seen["started"] = True
                content_type = dict(message.get("headers", ())).get(b"content-type", b"")
                seen["sse"] = content_type.startswith(b"text/event-stream")
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                seen["ended"] = True
            await send(message)

        await self.app(scope, receive, watch)
        if seen["ended"] or (seen["started"] and not seen["sse"]):
            return
        if not seen["started"]:
            body = json.dumps({"error": self.ERROR}).encode()
            await send({"type": "http.response.start", "status": 502,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
        else:
            body = f"data: {json.dumps({'error': self.ERROR})}\n\n".encode()
        await send({"type": "http.response.body", "body": body})


def proxy_middlewares():
    """Ray's proxy calls this at start when RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH names it
    (PROXY_CALLBACK): its middlewares wrap every request the proxy serves."""
    from starlette.middleware import Middleware

    return [Middleware(ReplicaLost)]


class Gathered:
    """A Prometheus collector of metric families already read (merge_metrics)."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def merge_metrics(texts):
    """{replica: its /metrics text} -> one exposition in which every sample has a replica label."""
    families = {}
    for replica, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(family.name, family)
            samples = [s._replace(labels={**s.labels, "replica": replica}) for s in family.samples]
            if merged is family:
                family.samples = samples
            else:
                merged.samples += samples
    registry = CollectorRegistry()
    registry.register(Gathered(list(families.values())))
    return generate_latest(registry)


def deployment_options(args, autoscaling=None):
    """Ray Serve's options for the replicas, from `estella serve`'s flags; autoscaling: more of Ray's
    AutoscalingConfig fields (upscale_delay_s, ...) where the flags turn autoscaling on."""
    # A replica admits what its engine admits (the batch and its queue); beyond that the engine
    # answers 503 queue_full, as one server does. Ray's own default (5) would queue streams at the
    # proxy that the engine could batch.
    options = {"max_ongoing_requests": args.max_batch + args.max_queue,
               "graceful_shutdown_timeout_s": args.shutdown_timeout,
               "ray_actor_options": {"num_cpus": args.threads or 1}}
    if args.max_replicas is not None:
        options["autoscaling_config"] = {
            "min_replicas": 1 if args.min_replicas is None else args.min_replicas,
            "initial_replicas": max(1, args.min_replicas or 0),
            "max_replicas": args.max_replicas,
            # A replica is busy when its batch is full, not at Ray's default of 2 requests.
            "target_ongoing_requests": args.target_ongoing_requests or args.max_batch,
            **(autoscaling or {}),
        }
    else:
        options["num_replicas"] = args.replicas or 1
    return options


def application(args, app_options, autoscaling=None):
    """The Ray Serve application of `estella serve`'s parsed, checked flags and the HTTP app's
    options made from them (parse_args)."""
    engine_options = {"backend": args.backend, "precision": args.precision, "threads": args.threads,
                      "max_batch": args.max_batch, "max_queue": args.max_queue, "max_chars": args.max_chars}
    deployment = serve.deployment(EstellaReplica, name=APP_NAME, **deployment_options(args, autoscaling))
    return deployment.bind(os.path.abspath(args.export_dir), engine_options, app_options)


class FlagError(argparse.ArgumentParser):
    """An argument parser that raises (an EstellaError) instead of exiting."""

    def error(self, message):
        raise EstellaError(message)


def parse_args(argv):
    """`estella serve`'s own parser and checks: argv (the export first) -> (args, the HTTP app's options)."""
    from .cli import add_parser, check_args

    parser = FlagError(prog="estella")
    add_parser(parser.add_subparsers(dest="command", parser_class=FlagError))
    args = parser.parse_args(["serve", *argv])
    return args, check_args(args)


def app_builder(args):
    """`serve run estella.serve.ray_serve:app_builder export_dir=PATH [flag=value ...]`: the flags
    of `estella serve` without their dashes, _ for - (max_batch=32 replicas=2 api_key=K); in a
    config file's `args`, a list gives a flag several values. Flags about the address
    (host, port, ray_address) are Ray's there: serve's http_options."""
    args = dict(args)
    if "export_dir" not in args:
        raise EstellaError("app_builder needs export_dir=PATH (an export directory)")
    argv = [str(args.pop("export_dir"))]
    for key, value in args.items():
        if key in ("host", "port", "ray_address"):
            raise EstellaError(f"{key} is not an application argument: set it in Ray Serve's http_options "
                               "or the cluster's address")
        argv.append("--" + key.replace("_", "-"))
        argv += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return application(*parse_args(argv))


def run_on_ray(args, app_options):
    """`estella serve ... --replicas N`: start (or join, --ray-address) a Ray cluster, run the app
    with Ray's proxy on --host:--port, and block until SIGTERM or Ctrl-C; then shut Serve down
    (Ray lets running requests finish for --shutdown-timeout seconds)."""
    app = application(args, app_options)
    if args.ray_address is None:
        load_manifest(args.export_dir)  # a broken export is refused here, not by replicas Ray retries
        # A replica asks for --threads CPUs (1 by default); a local cluster has room for every
        # replica asked, even on a smaller machine, rather than leaving them unscheduled.
        replicas = args.replicas or args.max_replicas or 1
        start_local_cluster(max(os.cpu_count() or 1, replicas * (args.threads or 1)))
    else:
        join_cluster(args.ray_address)
    stop = StopOnSignal()
    try:
        # The proxy is Ray's uvicorn: it takes the keep-alive timeout; --timeout-header and
        # --max-connections are the single server's own guards.
        serve.start(http_options={"host": args.host, "port": args.port,
                                  "keep_alive_timeout_s": args.timeout_keep_alive})
        print(f"estella serve: Ray Serve on http://{args.host}:{args.port} (loading {args.export_dir})",
              file=sys.stderr, flush=True)
        serve.run(app, name=APP_NAME, route_prefix="/")
        print(f"estella serve: {app_options['model_name']} running on Ray Serve", file=sys.stderr, flush=True)
        stop.wait()
    except RuntimeError as e:  # the application could not deploy: a replica failed to start
        raise EstellaError(f"Ray Serve could not start {args.export_dir}: {e}") from None
    finally:
        stop.restore()
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def start_local_cluster(cpus):
    """A Ray cluster of this machine alone: every part on 127.0.0.1 and free ports, no dashboard, no
    usage statistics sent (unless RAY_USAGE_STATS_ENABLED=1 is set); its processes (and so Ray's
    proxy) get PROXY_CALLBACK in their environment."""
    os.environ.update(PROXY_CALLBACK)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)


def join_cluster(address, timeout=10.0):
    """ray.init on a running cluster; an address with nothing listening is refused at once (Ray
    itself would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if host and port.isdigit():
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
        except OSError as e:
            raise EstellaError(f"--ray-address {address}: no Ray cluster answers there ({e})") from None
    try:
        ray.init(address=address, log_to_driver=False)
    except ConnectionError as e:
        raise EstellaError(f"--ray-address {address}: {e}") from None


class StopOnSignal:
    """Waits for SIGTERM or SIGINT in the main thread."""

    def __init__(self):
        self.event = threading.Event()
        self.previous = {s: signal.signal(s, lambda *_: self.event.set()) for s in (signal.SIGTERM, signal.SIGINT)}

    def wait(self):
        while not self.event.wait(1.0):
            pass

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, handler)
