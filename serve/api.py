"""The HTTP interface of the engine: OpenAI-style legacy completions, models, health, metrics, the page.

    app = create_app(engine, model_name="estella")           # an Engine, or a function that loads one
    uvicorn.run(app, host="127.0.0.1", port=8000)            # estella serve does this (cli.py)

The body is parsed and checked here, not by FastAPI's pydantic models, so a bad request answers
400 with OpenAI's error shape {"error": {"message", "type", "code"}} and the engine's own messages
(the CLI's, with its flags renamed to the API's fields), never FastAPI's 422.
"""

import asyncio
import contextlib
import hmac
import importlib.resources
import json
import re
import threading
import time
import traceback
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from estella.runtime.errors import EstellaError

from .engine import Draining, EngineFailed, QueueFull

MAX_BODY_BYTES = 1 << 20     # a request body over 1 MiB answers 413
DEFAULT_MAX_TOKENS = 16      # OpenAI's default for the legacy completions endpoint
CHUNK_INTERVAL = 0.05        # s between two SSE chunks of a stream: at most 20 events/s per stream
CLI_FLAGS = {"--temperature": "temperature", "--top-k": "top_k", "--top-p": "top_p", "--chars": "max_tokens",
             "--seed": "seed", "--stop": "stop", "--logprobs": "logprobs", "--skip-unknown": "skip_unknown"}


class APIError(Exception):
    def __init__(self, status, message, type_="invalid_request_error", code=None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code


def error_response(status, message, type_, code):
    return JSONResponse({"error": {"message": message, "type": type_, "code": code}}, status_code=status)


def api_message(error):
    """The engine's message with the CLI's flags named as the API's fields."""
    return re.sub(r"--[a-z-]+\b", lambda m: CLI_FLAGS.get(m.group(0), m.group(0)), str(error))


class Metrics:
    def __init__(self, app):
        self.registry = r = CollectorRegistry()  # one per app: several servers can live in one process
        self.requests = Counter("estella_requests", "completion requests by HTTP status (499: the client left)",
                                ["status"], registry=r)
        engine = lambda: app.state.engine  # noqa: E731
        Gauge("estella_requests_running", "streams in the batch", registry=r).set_function(
            lambda: engine().running if engine() else 0)
        Gauge("estella_requests_waiting", "streams queued for a batch slot", registry=r).set_function(
            lambda: engine().waiting if engine() else 0)
        self.batch = Histogram("estella_batch_size", "streams per batched step", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.ttft = Histogram("estella_time_to_first_char_seconds", "from request to its first character",
                              registry=r, buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.latency = Histogram("estella_request_latency_seconds", "from request to its last character",
                                 registry=r, buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120))
        self.chars = Counter("estella_chars_generated", "characters generated", registry=r)

    def finished(self, streams):
        for s in streams:
            if s.first_char_at is not None:
                self.ttft.observe(s.first_char_at - s.created)
            if s.finished_at is not None and s.finish_reason != "cancelled":
                self.latency.observe(s.finished_at - s.created)
            self.chars.inc(len(s.chars))


def create_app(engine, model_name="estella", api_keys=(), cors_origins=()):
    """engine: an Engine, or a function returning one, called in a thread at startup (health says
    "loading" until it returns)."""
    def ready(e):
        e.on_step = metrics.batch.observe
        app.state.engine = e

    def load():
        try:
            ready(engine())
        except Exception as e:  # shown on /health; a bad export's message is enough, a bug's traceback is not
            if not isinstance(e, EstellaError):
                traceback.print_exc()
            app.state.load_error = e

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if callable(engine):
            threading.Thread(target=load, name="estella-load", daemon=True).start()
        yield

    app = FastAPI(title="estella", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.engine = app.state.load_error = None
    app.state.draining = False
    app.state.model_name = model_name
    metrics = app.state.metrics = Metrics(app)
    keys = [k.encode() for k in api_keys]
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    if not callable(engine):
        ready(engine)

    @app.exception_handler(APIError)
    async def on_api_error(request, e):
        return error_response(e.status, e.message, e.type, e.code)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request, e):
        code = "not_found" if e.status_code == 404 else "method_not_allowed" if e.status_code == 405 else None
        message = f"no such path: {request.method} {request.url.path}" if e.status_code == 404 else str(e.detail)
        return error_response(e.status_code, message, "invalid_request_error", code)

    def running_engine():
        failed = app.state.load_error or (app.state.engine is not None and app.state.engine.failed)
        if failed:
            raise APIError(500, f"the model failed: {failed!r}", "server_error", "engine_failed")
        if app.state.engine is None:
            raise APIError(503, "the model is still loading", "service_unavailable", "loading")
        if app.state.draining or not app.state.engine.accepting:
            raise APIError(503, "the server is shutting down and takes no new requests", "service_unavailable",
                           "draining")
        return app.state.engine

    def check_key(request):
        if not keys:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(given.strip().encode(), k) for k in keys):
            raise APIError(401, "a valid API key is needed: send the header 'Authorization: Bearer KEY'",
                           "authentication_error", "invalid_api_key")

    @app.get("/health")
    async def health():
        if app.state.load_error is not None or (app.state.engine is not None and app.state.engine.failed is not None):
            return JSONResponse({"status": "error"}, status_code=503)
        if app.state.engine is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        if app.state.draining or not app.state.engine.accepting:
            return JSONResponse({"status": "draining"}, status_code=503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics_page():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        page = importlib.resources.files("estella.serve").joinpath("static/index.html")
        if not page.is_file():
            raise APIError(404, "this install has no web page (serve/static/index.html)", code="not_found")
        return HTMLResponse(page.read_text(encoding="utf-8"))

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        engine = running_engine()
        backend = engine.backend
        return {"object": "list", "data": [{
            "id": model_name, "object": "model", "created": int(time.time()), "owned_by": "estella",
            "vocab_size": len(engine.vocab), "state_size": backend.state_size, "precision": backend.precision,
            "backend": backend.name, "max_chars": engine.max_chars}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        try:
            check_key(request)
            engine = running_engine()
            req = parse_completion(await read_json(request), model_name, engine)
            streams = make_streams(engine, req)
            try:
                engine.add(streams)
            except (QueueFull, Draining) as e:
                raise APIError(503, str(e), "service_unavailable",
                               "queue_full" if isinstance(e, QueueFull) else "draining") from None
            except EngineFailed as e:
                raise APIError(500, str(e), "server_error", "engine_failed") from None
        except APIError as e:
            metrics.requests.labels(str(e.status)).inc()
            raise
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": model_name}
        if req["stream"]:
            return StreamingResponse(sse(request, engine, streams, req, head, metrics), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        watch = Watch(request)
        try:
            while not all(s.done.is_set() for s in streams):
                await watch.news(streams, when_done=True)
        except ClientGone:
            metrics.requests.labels("499").inc()
            return Response(b"", status_code=499)
        finally:
            watch.close()
            for s in streams:
                if not s.done.is_set():
                    engine.cancel(s)
            metrics.finished(streams)
        if any(s.finish_reason == "error" for s in streams):
            metrics.requests.labels("500").inc()
            return error_response(500, f"the model failed: {engine.failed!r}", "server_error", "engine_failed")
        metrics.requests.labels("200").inc()
        choices = [{"index": i, "text": (s.prime if req["echo"] else "") + s.text,
                    "logprobs": logprobs_of(s, 0, s.published, req["echo"], req["echo"]), "finish_reason": s.finish_reason}
                   for i, s in enumerate(streams)]
        return {**head, "choices": choices, "usage": usage(streams)}

    return app


async def read_json(request):
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:  # refused unread
        raise APIError(413, f"the request body must be at most {MAX_BODY_BYTES} bytes", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise APIError(413, f"the request body must be at most {MAX_BODY_BYTES} bytes", code="request_too_large")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return data


def parse_completion(body, model_name, engine):
    """The request's fields, type-checked; the values are checked by the engine (make_streams)."""
    def bad(field, allowed):
        raise APIError(400, f"{field} must be {allowed}, got {body[field]!r}", code="invalid_value")

    def get(field, default, kinds, allowed):
        value = body.get(field)
        if value is None:
            return default
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            bad(field, allowed)
        return value

    model = get("model", model_name, (str,), "a string")
    if model != model_name:
        raise APIError(404, f"no model named {model!r}; this server serves {model_name!r}",
                       "invalid_request_error", "model_not_found")
    if "prompt" not in body:
        raise APIError(400, "prompt is required (a string or a list of strings)", code="invalid_value")
    prompt = body["prompt"]
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        bad("prompt", "a string or a non-empty list of strings")
    n = get("n", 1, (int,), "an integer >= 1")
    if n < 1:
        bad("n", "an integer >= 1")
    if n * len(prompts) > engine.max_batch:
        raise APIError(400, f"n x prompts = {n * len(prompts)} is more than the server's batch "
                            f"({engine.max_batch}, --max-batch)", code="invalid_value")
    stream_options = get("stream_options", {}, (dict,), "an object")
    return {
        "prompts": prompts, "n": n,
        "max_tokens": get("max_tokens", DEFAULT_MAX_TOKENS, (int,), "an integer"),
        "temperature": get("temperature", 1.0, (int, float), "a number"),
        "top_p": get("top_p", None, (int, float), "a number"),
        "top_k": get("top_k", None, (int,), "an integer"),
        "seed": get("seed", None, (int,), "an integer"),
        "stop": get("stop", None, (str, list), "a string or a list of strings"),
        "logprobs": get("logprobs", None, (int,), "an integer"),
        "echo": get("echo", False, (bool,), "true or false"),
        "stream": get("stream", False, (bool,), "true or false"),
        "skip_unknown": get("skip_unknown", False, (bool,), "true or false"),
        "include_usage": bool(stream_options.get("include_usage")),
    }


def make_streams(engine, req):
    """One stream per prompt and choice; choice i of a seeded request uses seed + i (as generate_many)."""
    streams = []
    try:
        for prompt in req["prompts"]:
            for _ in range(req["n"]):
                seed = None if req["seed"] is None else req["seed"] + len(streams)
                streams.append(engine.make_stream(
                    prompt, req["max_tokens"], req["temperature"], req["top_k"], req["top_p"], seed, req["stop"],
                    req["logprobs"], req["skip_unknown"]))
    except EstellaError as e:
        raise APIError(400, api_message(e), code="invalid_value") from None
    return streams


def logprobs_of(stream, start, end, echo, with_prime):
    """OpenAI's logprobs object for generated characters [start, end), after the prime if with_prime."""
    if stream.logprobs is None:
        return None
    prime = stream.prime if with_prime else ""
    offset = (len(stream.prime) if echo else 0) + start
    chars = list(prime) + stream.chars[start:end]
    # The prime's characters are given, not sampled: their entries are null.
    return {"tokens": chars,
            "token_logprobs": [None] * len(prime) + stream.token_logprobs[start:end],
            "top_logprobs": [None] * len(prime) + stream.top_logprobs[start:end],
            "text_offset": list(range(offset - len(prime), offset - len(prime) + len(chars)))}


def usage(streams):
    prompt = sum(len(s.prime) for s in streams)
    completion = sum(s.published for s in streams)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ClientGone(Exception):
    pass


class Watch:
    """Waits for news from the scheduler thread, or for the client to leave (http.disconnect, as vLLM
    listens for it). One future per wait, resolved from either side: no task per wait."""

    def __init__(self, request):
        self.loop = asyncio.get_running_loop()
        self.future = None
        self.gone = False
        self.listener = asyncio.ensure_future(self._disconnect(request.receive))
        self.listener.add_done_callback(self._on_gone)

    @staticmethod
    async def _disconnect(receive):
        while (await receive())["type"] != "http.disconnect":
            pass

    def _on_gone(self, task):
        self.gone = not task.cancelled()
        self._resolve()

    def _resolve(self):
        if self.future is not None and not self.future.done():
            self.future.set_result(None)

    def _wake(self):  # called on the scheduler thread
        self.loop.call_soon_threadsafe(self._resolve)

    async def news(self, streams, positions=None, when_done=False, timeout=None):
        """Return once a stream has characters past its position, or has finished, or (with a
        timeout) once that many seconds have passed."""
        if self.gone:
            raise ClientGone()
        self.future = self.loop.create_future()
        for s in streams:
            s.wake_me(self._wake, when_done)
        for i, s in enumerate(streams):
            if s.done.is_set() or (positions is not None and s.published > positions[i]):
                return
        timer = self.loop.call_later(timeout, self._resolve) if timeout is not None else None
        try:
            await self.future
        finally:
            if timer is not None:
                timer.cancel()
        if self.gone:
            raise ClientGone()

    def close(self):
        self.listener.cancel()


async def sse(request, engine, streams, req, head, metrics):
    """Server-sent events: each chunk carries what is ready; the first character goes out at once."""
    positions, ended = [0] * len(streams), [False] * len(streams)
    prefix = [s.prime if req["echo"] else "" for s in streams]  # the echoed prime goes with the first chunk
    watch = Watch(request)
    status = "499"
    try:
        while not all(ended):
            await watch.news(streams, positions)
            for i, s in enumerate(streams):
                reason = s.finish_reason  # read before published: once set, published is final
                end = s.published
                if ended[i] or (end == positions[i] and reason is None):
                    continue
                choice = {"index": i, "text": prefix[i] + "".join(s.chars[positions[i]:end]),
                          "logprobs": logprobs_of(s, positions[i], end, req["echo"], bool(prefix[i])),
                          "finish_reason": reason}
                prefix[i], positions[i], ended[i] = "", end, reason is not None
                yield f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"
            if not all(ended):
                # Coalesce: the next chunk carries all that is ready CHUNK_INTERVAL from now, or goes at
                # once when a stream ends, so that a short request is not held back for the interval.
                await watch.news([s for s, e in zip(streams, ended) if not e], when_done=True, timeout=CHUNK_INTERVAL)
        if req["include_usage"]:
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage(streams)})}\n\n"
        yield "data: [DONE]\n\n"
        status = "200"
    except ClientGone:
        pass
    finally:
        watch.close()
        for s in streams:
            if not s.done.is_set():
                engine.cancel(s)
        metrics.requests.labels(status).inc()
        metrics.finished(streams)
