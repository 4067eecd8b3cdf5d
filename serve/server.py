"""Run the engine and its HTTP API under uvicorn, with a draining SIGTERM:

    run_server("runs/default/export", port=8000, backend="tflite", precision="int8")   # blocks

On SIGTERM new requests get 503, running ones finish for up to shutdown_timeout seconds and are
then ended with finish_reason "length"; run_server then returns (estella serve exits 0). A second
SIGTERM, or Ctrl-C, stops at once: every stream ends now, and open responses get STOP_GRACE
seconds to send their last event.
If the scheduler itself fails, the server stops and run_server raises EngineFailed (estella serve
exits 1, for a supervisor to restart it), rather than live on answering errors.

Connections: an idle keep-alive connection is closed after timeout_keep_alive seconds, one that has
not sent a whole request head within timeout_header seconds too, and at most max_connections are
open at once (a connection past that is closed as soon as it is accepted). Request heads are at most
H11_MAX_HEAD bytes.
"""

import os
import signal
import sys
import threading

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .api import create_app
from .cpus import keep_process_to
from .engine import Engine, EngineFailed
from .engine_process import EngineProcess

# Python's switch interval where the scheduler is a thread of this process (--engine thread) and shares
# the interpreter lock with the event loop: at the default 5 ms, either could keep the other waiting that long.
SWITCH_INTERVAL = 0.0005  # s
H11_MAX_HEAD = 16 * 1024  # bytes of a request's line and headers
STOP_GRACE = 2            # s: on a second signal, how long the open responses may take to send their end


def run_server(export_dir, host="127.0.0.1", port=8000, backend="auto", precision="float32", threads=None,
               engine="process", engine_cpus=None, max_batch=32, max_queue=256, max_chars=4096, api_keys=(),
               cors_origins=(), shutdown_timeout=30.0, model_name="estella", log_level="warning", limits=None,
               chat_template=None, metrics_need_key=False, timeout_keep_alive=5.0, timeout_header=10.0,
               max_connections=1000):
    """Serve the export until SIGTERM (drained) or Ctrl-C; blocks. The port opens at once and /health
    answers 503 "loading" until the model is loaded; a model that cannot load stops the server and
    its error is raised here (an EstellaError: `estella serve` prints it and exits 2). engine: "process"
    runs the scheduler in a child process (EngineProcess), "thread" in this one (Engine). engine_cpus:
    a set of CPU ids for the engine process (checked: parse_cpus); this process keeps to the others."""
    if engine == "thread":  # the scheduler thread shares the lock with the event loop
        sys.setswitchinterval(SWITCH_INTERVAL)
    others = os.sched_getaffinity(0) - engine_cpus if engine_cpus else None
    if others:
        keep_process_to(others)
    fatal = []

    def on_fatal(error):  # the scheduler's thread: stop the server, so that the process exits non-zero
        fatal.append(error)
        server.should_exit = True

    def load():  # (on a thread, once the loop runs)
        options = {"max_batch": max_batch, "max_queue": max_queue, "max_chars": max_chars, "on_fatal": on_fatal}
        try:
            if engine == "process":
                loaded = EngineProcess(export_dir, backend, precision, threads, loop=app.state.loop, cpus=engine_cpus,
                                       **options)
            else:
                loaded = Engine.load(export_dir, backend, precision, threads, **options)
        except BaseException:
            server.should_exit = True
            raise
        print(f"estella serve: {model_name} loaded ({loaded.backend.name} {loaded.backend.precision}, "
              f"the engine in a {engine})", file=sys.stderr, flush=True)
        return loaded

    app = create_app(load, model_name, api_keys, cors_origins, limits=limits, chat_template=chat_template,
                     metrics_need_key=metrics_need_key)
    # proxy_headers off: nothing here reads the client's address (no access log), so uvicorn need not
    # rewrite it from X-Forwarded-For on every request.
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, proxy_headers=False,
                            timeout_keep_alive=timeout_keep_alive, h11_max_incomplete_event_size=H11_MAX_HEAD,
                            http=guarded_http(timeout_header, max_connections))
    server = DrainingServer(config, app, shutdown_timeout)
    print(f"estella serve: http://{host}:{port} (loading {export_dir})", file=sys.stderr, flush=True)
    server.run()
    if app.state.engine is not None:
        app.state.engine.shutdown()
    if app.state.load_error is not None:
        raise app.state.load_error
    if fatal:
        raise EngineFailed(f"the scheduler failed: {fatal[0]!r}")


def guarded_http(timeout_header, max_connections, base=None):
    """uvicorn's HTTP protocol `base` (default: httptools where installed, as uvicorn's "auto" picks,
    else h11) with a header timeout, a bound on the request head's bytes, and on open connections."""
    Base = base or auto_http()

    class Guarded(Base):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._head_timer, self._head_bytes = None, 0
            if len(self.connections) > max_connections:
                transport.close()  # over the bound: no request is read from it
                return
            self._await_head()

        def _await_head(self):
            """Until a whole request head has come, at most timeout_header s and H11_MAX_HEAD bytes."""
            if self._head_timer is None:
                self._head_timer, self._head_bytes = self.loop.call_later(timeout_header, self._close), 0

        def _head_complete(self):
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _close(self):
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data):
            super().data_received(data)
            if Base is H11Protocol and self.conn.their_state is not h11.IDLE:
                self._head_complete()  # h11 has read a request's head (it bounds its size itself)
            if self._head_timer is not None:  # still no whole head
                self._head_bytes += len(data)
                if self._head_bytes > H11_MAX_HEAD:
                    self._close()

        def on_headers_complete(self):  # httptools: a request's head is whole
            self._head_complete()
            super().on_headers_complete()

        def on_response_complete(self):
            if not getattr(self, "pipeline", None):  # (httptools: a pipelined request's head has come)
                self._await_head()  # the next request's head; armed first, as h11 reads a pipelined one at once
            super().on_response_complete()
            if Base is H11Protocol and self.conn.their_state is not h11.IDLE:
                self._head_complete()

        def connection_lost(self, exc):
            self._head_complete()
            super().connection_lost(exc)

    return Guarded


def auto_http():
    try:
        import httptools  # noqa: F401
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        return HttpToolsProtocol
    except ImportError:
        return H11Protocol


class DrainingServer(uvicorn.Server):
    """A uvicorn.Server whose first SIGTERM drains the engine; a second SIGTERM or a Ctrl-C stops at once."""

    def __init__(self, config, app, shutdown_timeout):
        super().__init__(config)
        self.app, self.shutdown_timeout = app, shutdown_timeout
        self.draining = False

    def handle_exit(self, sig, frame):
        if sig == signal.SIGTERM and not self.draining:
            self.draining = self.app.state.draining = True  # /health and new requests answer 503 now
            threading.Thread(target=self._drain, daemon=True).start()
            return  # not recorded: uvicorn re-raises recorded signals at exit, and a drain exits 0
        # At once: every stream ends now (its client gets the last event), and uvicorn waits at most
        # STOP_GRACE seconds for the open responses to be sent.
        self.draining = self.app.state.draining = True
        engine = self.app.state.engine
        if engine is not None:
            threading.Thread(target=engine.end_now, daemon=True).start()
        self.config.timeout_graceful_shutdown = STOP_GRACE
        self.should_exit = True
        if sig == signal.SIGINT:
            self._captured_signals.append(sig)  # re-raised at exit: KeyboardInterrupt, exit 130

    def _drain(self):
        engine = self.app.state.engine  # None while loading: nothing to drain
        if engine is not None:
            engine.drain(self.shutdown_timeout)
        self.should_exit = True  # uvicorn then lets the open responses finish sending
