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
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from estella.runtime.errors import EstellaError, SettingError

from .chat import ChatTemplate, UnknownRole
from .engine import Draining, EngineFailed, Life, QueueFull
from .errors import RETRY_AFTER, APIError, error_response
from .limits import Limits, LimitExceeded, check_request, json_depth
from .replies import CHAT, COMPLETION, Answer, EventStream, sse, whole
from .schema import ChatCompletionRequest, CompletionRequest

API_NAMES = {"max_chars": "max_tokens", "prime": "prompt"}  # the engine's field -> the API's


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
    app.router.routes.extend(router.routes)
    if not callable(engine):
        engine_ready(app, engine)
    return app


def engine_ready(app, engine):
    engine.on_step = app.state.metrics.batch.observe
    app.state.engine = engine


@contextlib.asynccontextmanager
async def lifespan(app):
    app.state.loop = asyncio.get_running_loop()  # the HTTP side's loop (an engine process's news is read on it)
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
            path = request.scope["path"]
            if path.startswith("/v1/") or (path == "/metrics" and state.metrics_need_key):
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
    # The count of brackets bounds the depth: measure it only where it could be too deep.
    depth = 0 if body.count(b"[") + body.count(b"{") <= limits.max_json_depth else json_depth(body)
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
        "vocab_size": len(engine.vocab), "state_size": backend.state_size,
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
        return EventStream(sse(request, engine, answer, include_usage, metrics),
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
