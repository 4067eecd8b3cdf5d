"""Run the engine and its HTTP API under uvicorn, with a draining SIGTERM:

    run_server("runs/default/export", port=8000, backend="tflite", precision="int8")   # blocks

On SIGTERM new requests get 503, running ones finish for up to shutdown_timeout seconds and are
then ended with finish_reason "length"; run_server then returns (estella serve exits 0). A second
SIGTERM, or Ctrl-C, stops at once.
"""

import signal
import sys
import threading

import uvicorn

from .api import create_app
from .engine import Engine

SWITCH_INTERVAL = 0.0005  # s


def run_server(export_dir, host="127.0.0.1", port=8000, backend="auto", precision="float32", threads=None,
               max_batch=32, max_queue=256, max_chars=4096, api_keys=(), cors_origins=(), shutdown_timeout=30.0,
               model_name="estella", log_level="warning"):
    """Serve the export until SIGTERM (drained) or Ctrl-C; blocks. The port opens at once and /health
    answers 503 "loading" until the model is loaded; a model that cannot load stops the server and
    its error is raised here (an EstellaError: `estella serve` prints it and exits 2)."""
    # The scheduler thread gives up the GIL during each step (the interpreter runs without it) and must
    # win it back from the event loop's thread; at Python's default switch interval (5 ms) it could
    # wait that long per character. 0.5 ms keeps a tick from waiting on the HTTP side for long.
    sys.setswitchinterval(SWITCH_INTERVAL)

    def load():
        try:
            engine = Engine.load(export_dir, backend, precision, threads, max_batch=max_batch,
                                 max_queue=max_queue, max_chars=max_chars)
        except BaseException:
            server.should_exit = True
            raise
        print(f"estella serve: {model_name} loaded ({engine.backend.name} {engine.backend.precision})",
              file=sys.stderr, flush=True)
        return engine

    app = create_app(load, model_name, api_keys, cors_origins)
    server = DrainingServer(uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False),
                            app, shutdown_timeout)
    print(f"estella serve: http://{host}:{port} (loading {export_dir})", file=sys.stderr, flush=True)
    server.run()
    if app.state.engine is not None:
        app.state.engine.shutdown()
    if app.state.load_error is not None:
        raise app.state.load_error


class DrainingServer(uvicorn.Server):
    """A uvicorn.Server whose first SIGTERM drains the engine before the server stops."""

    def __init__(self, config, app, shutdown_timeout):
        super().__init__(config)
        self.app, self.shutdown_timeout = app, shutdown_timeout
        self.draining = False

    def handle_exit(self, sig, frame):
        if sig == signal.SIGTERM and not self.draining:
            self.draining = self.app.state.draining = True  # /health and new requests answer 503 now
            threading.Thread(target=self._drain, daemon=True).start()
            return  # not recorded: uvicorn re-raises recorded signals at exit, and a drain exits 0
        super().handle_exit(sig, frame)

    def _drain(self):
        engine = self.app.state.engine  # None while loading: nothing to drain
        if engine is not None:
            engine.drain(self.shutdown_timeout)
        self.should_exit = True  # uvicorn then lets the open responses finish sending
