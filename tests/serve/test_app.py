"""The app in this process (uvicorn in a thread, real HTTP on 127.0.0.1): loading and a failing model."""

import contextlib
import threading
import time

import httpx
import pytest
import uvicorn

from estella.serve.api import create_app
from estella.serve.engine import Engine, EngineFailed
from estella.serve.process import free_port


@contextlib.contextmanager
def serving(app):
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(20)


def test_health_says_loading_until_the_model_is_loaded(serve_export):
    go, engines = threading.Event(), []

    def load():
        go.wait(20)
        engines.append(Engine.load(serve_export, "numpy"))
        return engines[0]

    with serving(create_app(load, "tiny")) as url:
        assert httpx.get(url + "/health").status_code == 503
        assert httpx.get(url + "/health").json() == {"status": "loading"}
        r = httpx.post(url + "/v1/completions", json={"prompt": "Pip"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "loading"
        go.set()
        deadline = time.monotonic() + 20
        while httpx.get(url + "/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = httpx.post(url + "/v1/completions", json={"prompt": "Pip", "max_tokens": 7})
        assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 7
    engines[0].shutdown()


def test_a_failing_model_answers_500_and_health_503(serve_export):
    engine = Engine.load(serve_export, "numpy", max_chars=10**6)
    calls = [0]
    step = engine.backend._step

    def failing_step(ids, state):  # the interpreter fails after a while (fault injection)
        calls[0] += 1
        if calls[0] > 50:
            raise RuntimeError("the interpreter broke")
        return step(ids, state)

    engine.backend._step = failing_step
    with serving(create_app(engine, "tiny")) as url:
        r = httpx.post(url + "/v1/completions", json={"prompt": "Pip", "max_tokens": 10**6}, timeout=20)
        assert r.status_code == 500 and "the interpreter broke" in r.json()["error"]["message"]
        assert httpx.get(url + "/health").json() == {"status": "error"}
        r = httpx.post(url + "/v1/completions", json={"prompt": "Pip"})
        assert r.status_code == 500 and r.json()["error"]["code"] == "engine_failed"
    with pytest.raises(EngineFailed, match="the interpreter broke"):
        engine.submit("Pip", 5)
