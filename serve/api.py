"""The HTTP interface of the engine: OpenAI-style completions and chat completions, models, health,
metrics, the page.

    app = create_app(engine, model_name="estella")           # an Engine, or a function that loads one
    uvicorn.run(app, host="127.0.0.1", port=8000)            # estella serve does this (server.py)

Request bodies are pydantic models (schema.py; the OpenAPI page is at /docs). Every error has
OpenAI's shape {"error": {"message", "type", "param", "code"}}: a bad body is 400 (never FastAPI's
422), a limit of the server is 400 naming its flag, a full queue or a drain is 503 with
Retry-After. The engine's errors carry the field they are about, and are worded here with the API's
names for them (max_chars is max_tokens, the prime is the prompt).
"""

import asyncio
import contextlib
import dataclasses
import hmac
import importlib.resources
import json
import threading
import time
import traceback
import uuid

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from estella.runtime.errors import EstellaError, SettingError

from .chat import ChatTemplate, UnknownRole
from .engine import Draining, EngineFailed, Life, QueueFull
from .limits import Limits, LimitExceeded, check_request, json_depth
from .schema import ChatCompletionRequest, CompletionRequest

DEFAULT_MAX_TOKENS = 16      # OpenAI's default for the legacy completions endpoint
CHUNK_INTERVAL = 0.05        # s between two SSE chunks of a stream: at most 20 events/s per stream
RETRY_AFTER = "1"            # s, on a 503
API_NAMES = {"max_chars": "max_tokens", "prime": "prompt"}  # the engine's field -> the API's


class APIError(Exception):
    def __init__(self, status, message, type_="invalid_request_error", code=None, param=None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type_, code, param


def error_response(status, message, type_="invalid_request_error", code=None, param=None):
    headers = {"Retry-After": RETRY_AFTER} if status == 503 else None
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status, headers=headers)


def api_name(field):
    return API_NAMES.get(field, field)


class Metrics:
    def __init__(self, app):
        self.registry = r = CollectorRegistry()  # one per app: several servers can live in one process
        self.requests = Counter("estella_requests", "completion requests by HTTP status (499: the client left; "
                                "500: the request failed, also after a stream began)", ["status"], registry=r)
        engine = lambda: app.state.engine  # noqa: E731
        Gauge("estella_requests_running", "streams in the batch", registry=r).set_function(
            lambda: engine().running if engine() else 0)
        Gauge("estella_requests_waiting", "streams queued for a batch slot", registry=r).set_function(
            lambda: engine().waiting if engine() else 0)
        self.batch = Histogram("estella_batch_size", "streams per batched step", registry=r,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.ttft = Histogram("estella_time_to_first_char_seconds", "from request to its first character "
                              "(streaming requests)", registry=r,
                              buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.latency = Histogram("estella_request_latency_seconds", "from request to its last character",
                                 registry=r, buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120))
        self.chars = Counter("estella_chars_generated", "characters generated", registry=r)


# --- the app ---

def create_app(engine, model_name="estella", api_keys=(), cors_origins=(), limits=None, chat_template=None,
               metrics_need_key=False):
    """engine: an Engine, or a function returning one, called in a thread at startup (health says
    "loading" until it returns). limits: a Limits (default: its defaults). chat_template: a
    ChatTemplate (default: the built-in one). metrics_need_key: /metrics asks for the API key too."""
    app = FastAPI(title="estella", summary="OpenAI-style completions and chat completions of a character model",
                  docs_url="/docs", redoc_url=None, lifespan=lifespan)
    state = app.state
    state.engine = state.load_error = None
    state.loader = engine if callable(engine) else None
    state.draining = False
    state.model_name = model_name
    state.keys = [k.encode() for k in api_keys]
    state.limits = limits or Limits()
    state.chat_template = chat_template or ChatTemplate()
    state.metrics_need_key = metrics_need_key
    state.metrics = Metrics(app)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "HEAD", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
    app.include_router(router)
    if not callable(engine):
        engine_ready(app, engine)
    return app


def engine_ready(app, engine):
    engine.on_step = app.state.metrics.batch.observe
    app.state.engine = engine


@contextlib.asynccontextmanager
async def lifespan(app):
    if app.state.loader is not None:
        threading.Thread(target=load_engine, args=(app,), name="estella-load", daemon=True).start()
    yield


def load_engine(app):
    try:
        engine_ready(app, app.state.loader())
    except Exception as e:  # shown on /health; a bad export's message is enough, a bug's traceback is not
        if not isinstance(e, EstellaError):
            traceback.print_exc()
        app.state.load_error = e


COMPLETION_PATHS = ("/v1/completions", "/v1/chat/completions")


def count_refused(request, status):
    """A completion request refused before it ran, by its status (those that ran count themselves)."""
    if request.url.path in COMPLETION_PATHS:
        request.app.state.metrics.requests.labels(str(status)).inc()


async def on_api_error(request, e):
    count_refused(request, e.status)
    return error_response(e.status, e.message, e.type, e.code, e.param)


async def on_validation_error(request, e):
    """pydantic's findings as OpenAI's 400: each one as "field: what is wrong, got value"."""
    count_refused(request, 400)
    errors = e.errors()
    if any(err["type"] in ("json_invalid", "model_attributes_type", "dict_type") and len(err["loc"]) <= 1
           for err in errors):
        return error_response(400, "the request body must be a JSON object", code="invalid_json")
    found = {}  # field -> what is wrong (a union's branches, each tried, said as one)
    for err in errors:
        loc = [str(x) for x in err["loc"] if x != "body"]
        # pydantic names the branch of a union it tried (str, list[str], ...): not the user's field
        loc = [x for x in loc if x not in ("str", "int", "float", "bool") and "[" not in x
               and not x.startswith(("function-", "constrained-"))]
        field = ".".join(loc) or "body"
        got = "" if err["type"] == "missing" else f", got {json.dumps(err.get('input'), default=str)[:80]}"
        if field in found:
            found[field] = (found[field][0] + " or " + err["msg"].removeprefix("Input should be "), got)
        else:
            found[field] = (err["msg"], got)
    message = "; ".join(f"{field}: {msg}{got}" for field, (msg, got) in list(found.items())[:5])
    return error_response(400, message, code="invalid_value", param=next(iter(found)))


async def on_http_error(request, e):
    code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
    message = f"no such path: {request.method} {request.url.path}" if e.status_code == 404 else str(e.detail)
    return error_response(e.status_code, message, "invalid_request_error", code)


async def on_unexpected_error(request, e):
    """A bug in this layer: a 500 in the JSON shape (its traceback on stderr), never text/plain."""
    traceback.print_exception(e)
    count_refused(request, 500)
    return error_response(500, f"the server failed on this request: {e!r}", "server_error", "internal_error")


class CheckedRoute(APIRoute):
    """A route that checks the API key (on /v1/*, and /metrics where asked) before anything else, and
    reads a POST body itself: at most --max-body-bytes, nested at most --max-json-depth (measured
    before parsing, so that deep nesting never reaches json.loads), whatever its Content-Type (curl
    -d sends form-urlencoded); FastAPI then validates the parsed JSON against the route's model."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def checked(request):
            state = request.app.state
            if request.url.path.startswith("/v1/") or (request.url.path == "/metrics" and state.metrics_need_key):
                check_key(state, request)
            if request.method == "POST":
                body = await read_body(request, state.limits)
                request._json = parse_json(body, state.limits)
                request._body = body
                request.scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"] + [
                    (b"content-type", b"application/json")]
                request.__dict__.pop("_headers", None)
            return await handler(request)

        return checked


def check_key(state, request):
    if not state.keys:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not any(hmac.compare_digest(given.strip().encode(), k) for k in state.keys):
        raise APIError(401, "a valid API key is needed: send the header 'Authorization: Bearer KEY'",
                       "authentication_error", "invalid_api_key")


async def read_body(request, limits):
    limit = limits.max_body_bytes
    too_large = APIError(413, f"the request body must be at most {limit} bytes (the server's --max-body-bytes)",
                         code="request_too_large")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:  # refused unread
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


def parse_json(body, limits):
    depth = json_depth(body)
    if depth > limits.max_json_depth:
        raise APIError(400, f"the request body nests {depth} deep; at most {limits.max_json_depth} (the server's "
                            "--max-json-depth)", code="invalid_json")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    return data


router = APIRouter(route_class=CheckedRoute)


@router.api_route("/health", methods=["GET", "HEAD"])
async def health(request: Request):
    state = request.app.state
    engine = state.engine
    if state.load_error is not None or (engine is not None and engine.life is Life.FAILED):
        return JSONResponse({"status": "error"}, status_code=503)
    if engine is None:
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": RETRY_AFTER})
    if state.draining or not engine.accepting:
        return JSONResponse({"status": "draining"}, status_code=503, headers={"Retry-After": RETRY_AFTER})
    return {"status": "ok"}


@router.api_route("/metrics", methods=["GET", "HEAD"])
async def metrics_page(request: Request):
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
async def page():
    page = importlib.resources.files("estella.serve").joinpath("static/index.html")
    if not page.is_file():
        raise APIError(404, "this install has no web page (serve/static/index.html)", code="not_found")
    return HTMLResponse(page.read_text(encoding="utf-8"))


@router.api_route("/v1/models", methods=["GET", "HEAD"])
async def models(request: Request):
    state = request.app.state
    engine = running_engine(state)
    backend = engine.backend
    return {"object": "list", "data": [{
        "id": state.model_name, "object": "model", "created": int(time.time()), "owned_by": "estella",
        "vocab_size": len(engine.vocab), "units": getattr(backend, "state_size", getattr(backend, "units", None)),
        "precision": backend.precision, "backend": backend.name, "max_chars": engine.max_chars}]}


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    """OpenAI's legacy completions: a prompt (or a list of them) continued, n choices each."""
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    return await complete(request, body, prompts, COMPLETION, body.logprobs, body.echo)


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    """OpenAI's chat completions: the messages rendered into one prime by the server's chat template."""
    try:
        prime = request.app.state.chat_template.render((m.role, m.text()) for m in body.messages)
    except UnknownRole as e:
        raise APIError(400, str(e), code="invalid_value", param="messages") from None
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs: true", code="invalid_value", param="top_logprobs")
    logprobs = (body.top_logprobs or 0) if body.logprobs else None
    return await complete(request, body, [prime], CHAT, logprobs, echo=False)


def running_engine(state):
    failed = state.load_error or (state.engine is not None and state.engine.failure)
    if failed:
        raise APIError(500, f"the model failed: {failed!r}", "server_error", "engine_failed")
    if state.engine is None:
        raise APIError(503, "the model is still loading", "service_unavailable", "loading")
    if state.draining or not state.engine.accepting:
        raise APIError(503, "the server is shutting down and takes no new requests", "service_unavailable", "draining")
    return state.engine


async def complete(request, body, prompts, form, logprobs, echo):
    state = request.app.state
    metrics = state.metrics
    engine = running_engine(state)
    streams = make_streams(state, engine, body, prompts, form, logprobs)
    try:
        engine.add(streams)
    except (QueueFull, Draining) as e:
        raise APIError(503, str(e), "service_unavailable",
                       "queue_full" if isinstance(e, QueueFull) else "draining") from None
    except EngineFailed as e:
        raise APIError(500, str(e), "server_error", "engine_failed") from None
    head = {"id": f"{form.id_prefix}{uuid.uuid4().hex}", "object": form.object, "created": int(time.time()),
            "model": state.model_name}
    answer = Answer(streams, len(prompts), echo, form, head, time.perf_counter())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(sse(request, engine, answer, include_usage, metrics), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return await whole(request, engine, answer, metrics)


def make_streams(state, engine, body, prompts, form, logprobs):
    """The request's streams, checked against the server's limits and the model, with ONE
    RequestParams built here; choice i of a seeded request uses seed + i (as generate_many)."""
    if body.model is not None and body.model != state.model_name:
        raise APIError(404, f"no model named {body.model!r}; this server serves {state.model_name!r}",
                       "invalid_request_error", "model_not_found", "model")
    n = body.n
    if n * len(prompts) > engine.max_batch:
        raise APIError(400, f"prompts x n = {n * len(prompts)} is more than the server's batch "
                            f"({engine.max_batch}, --max-batch)", code="invalid_value", param="n")
    max_tokens = form.max_tokens(body)
    try:
        params = engine.request_params(max_tokens, 1.0 if body.temperature is None else body.temperature, body.top_k,
                                       body.top_p, body.seed, body.stop, logprobs, streams=n * len(prompts))
        check_request(state.limits, prompts, n, max_tokens, body.stop, logprobs, form.logprobs_field)
        streams = []
        for prompt in prompts:
            choices = [params if params.seed is None else dataclasses.replace(params, seed=params.seed + len(streams) + i)
                       for i in range(n)]
            streams += engine.make_streams(prompt, choices, body.skip_unknown)
    except LimitExceeded as e:
        raise APIError(400, f"{e.field}: {e}", code="limit_exceeded", param=e.field) from None
    except SettingError as e:
        field = form.logprobs_field if e.field == "logprobs" else api_name(e.field)
        raise APIError(400, e.worded(lambda f: form.logprobs_field if f == "logprobs" else api_name(f)),
                       code="invalid_value", param=field) from None
    return streams


# --- reading the streams ---

class Answer:
    """One HTTP request's streams and what the reader has got from them (the reader's own state)."""

    def __init__(self, streams, prompts, echo, form, head, started):
        self.streams, self.echo, self.form, self.head, self.started = streams, echo, form, head, started
        n = len(streams) // prompts
        self.prompt_chars = sum(len(streams[k * n].prime) for k in range(prompts))  # once per prompt, not per choice
        self.sent = [0] * len(streams)  # characters handed to the client so far, per choice
        self.first = [True] * len(streams)

    def usage(self):
        completion = sum(self.sent)
        return {"prompt_tokens": self.prompt_chars, "completion_tokens": completion,
                "total_tokens": self.prompt_chars + completion}


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

    async def news(self, streams, final_only=False, timeout=None):
        """Return once a stream has a delta (or, if final_only, has ended), or after `timeout` s."""
        if self.gone:
            raise ClientGone()
        self.future = self.loop.create_future()
        for s in streams:
            s.on_delta(self._wake, final_only)
        for s in streams:  # asked first, then looked: a delta in between is seen here
            if s.done.is_set() or (not final_only and s.has_news()):
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


def finish(engine, answer, metrics, status):
    for s in answer.streams:
        if not s.done.is_set():
            engine.cancel(s)
    metrics.requests.labels(status).inc()
    metrics.chars.inc(sum(answer.sent))
    if status == "200":
        metrics.latency.observe(time.perf_counter() - answer.started)


async def whole(request, engine, answer, metrics):
    watch = Watch(request)
    try:
        while not all(s.done.is_set() for s in answer.streams):
            await watch.news(answer.streams, final_only=True)
    except ClientGone:
        finish(engine, answer, metrics, "499")
        return Response(b"", status_code=499)
    finally:
        watch.close()
    done = [s.result(0) for s in answer.streams]
    for i, d in enumerate(done):
        answer.sent[i] = len(d.text)
    failed = next((d.error for d in done if d.finish_reason == "error"), None)
    if failed is not None:
        finish(engine, answer, metrics, "500")
        return error_response(500, failed, "server_error", "request_failed")
    finish(engine, answer, metrics, "200")
    choices = [answer.form.whole_choice(i, s, d, answer.echo) for i, (s, d) in enumerate(zip(answer.streams, done))]
    return {**answer.head, "object": answer.form.object, "choices": choices, "usage": answer.usage()}


async def sse(request, engine, answer, include_usage, metrics):
    """Server-sent events: each chunk carries what is ready; the first character goes out at once."""
    streams, form = answer.streams, answer.form
    ended = [False] * len(streams)
    head = {**answer.head, "object": form.chunk_object}
    watch = Watch(request)
    status = "499"
    try:
        while not all(ended):
            await watch.news([s for s, e in zip(streams, ended) if not e])
            for i, s in enumerate(streams):
                delta = None if ended[i] else s.take()
                if delta is None:
                    continue
                if delta.finish_reason == "error":
                    status = "500"
                    error = {"message": delta.error, "type": "server_error", "param": None, "code": "request_failed"}
                    yield f"data: {json.dumps({'error': error})}\n\n"
                    yield "data: [DONE]\n\n"
                    return
                if delta.text and answer.first[i]:
                    metrics.ttft.observe(time.perf_counter() - answer.started)
                choice = form.chunk_choice(i, s, delta.text, delta.logprobs, delta.finish_reason, answer)
                answer.sent[i] += len(delta.text)
                answer.first[i] = False
                ended[i] = delta.finish_reason is not None
                yield f"data: {json.dumps({**head, 'choices': [choice]})}\n\n"
            if not all(ended):
                # Coalesce: the next chunk carries all that is ready CHUNK_INTERVAL from now, or goes at
                # once when a stream ends, so that a short request is not held back for the interval.
                await watch.news([s for s, e in zip(streams, ended) if not e], final_only=True,
                                 timeout=CHUNK_INTERVAL)
        if include_usage:
            yield f"data: {json.dumps({**head, 'choices': [], 'usage': answer.usage()})}\n\n"
        yield "data: [DONE]\n\n"
        status = "200"
    except ClientGone:
        pass
    finally:
        watch.close()
        finish(engine, answer, metrics, status)


# --- the two response shapes ---

class CompletionForm:
    id_prefix, object, chunk_object, logprobs_field = "cmpl-", "text_completion", "text_completion", "logprobs"

    @staticmethod
    def max_tokens(body):
        return DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens

    @staticmethod
    def logprobs(entries, prime, offset):
        """OpenAI's legacy logprobs object: the prime's characters (echoed) have null entries."""
        if entries is None:
            return None
        chars = list(prime) + [c for c, _, _ in entries]
        return {"tokens": chars,
                "token_logprobs": [None] * len(prime) + [lp for _, lp, _ in entries],
                "top_logprobs": [None] * len(prime) + [dict(top) for _, _, top in entries],
                "text_offset": list(range(offset, offset + len(chars)))}

    def whole_choice(self, i, stream, done, echo):
        prefix = stream.prime if echo else ""
        return {"index": i, "text": prefix + done.text, "logprobs": self.logprobs(done.logprobs, prefix, 0),
                "finish_reason": done.finish_reason}

    def chunk_choice(self, i, stream, text, entries, finish_reason, answer):
        prefix = stream.prime if answer.echo and answer.first[i] else ""  # the echoed prime goes with the first chunk
        offset = answer.sent[i] + (len(stream.prime) if answer.echo else 0) - len(prefix)
        return {"index": i, "text": prefix + text, "logprobs": self.logprobs(entries, prefix, offset),
                "finish_reason": finish_reason}


class ChatForm:
    id_prefix, object, chunk_object, logprobs_field = "chatcmpl-", "chat.completion", "chat.completion.chunk", \
        "top_logprobs"

    @staticmethod
    def max_tokens(body):
        given = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        return DEFAULT_MAX_TOKENS if given is None else given

    @staticmethod
    def logprobs(entries):
        if entries is None:
            return None

        def token(c, lp):
            return {"token": c, "logprob": lp, "bytes": list(c.encode("utf-8"))}

        return {"content": [{**token(c, lp), "top_logprobs": [token(t, tlp) for t, tlp in top]}
                            for c, lp, top in entries]}

    def whole_choice(self, i, stream, done, echo):
        return {"index": i, "message": {"role": "assistant", "content": done.text},
                "logprobs": self.logprobs(done.logprobs), "finish_reason": done.finish_reason}

    def chunk_choice(self, i, stream, text, entries, finish_reason, answer):
        delta = {"role": "assistant", "content": text} if answer.first[i] else {"content": text} if text else {}
        return {"index": i, "delta": delta, "logprobs": self.logprobs(entries), "finish_reason": finish_reason}


COMPLETION, CHAT = CompletionForm(), ChatForm()
