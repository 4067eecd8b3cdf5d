"""The app in this process (uvicorn in a thread, real HTTP on 127.0.0.1): loading and a failing model."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from estella.runtime.generator import Generator
from estella.serve.api import create_app
from estella.serve.engine import Engine, EngineFailed
from estella.serve.limits import Limits
from estella.serve.process import free_port
from estella.serve.server import guarded_http


@contextlib.contextmanager
def serving(app, **config):
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", **config))
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


def test_a_broken_engine_answers_500_and_health_503(serve_export, break_after):
    """In this process (no supervisor): once the scheduler cannot go on, requests get 500 JSON and
    /health 503 "error" (estella serve itself exits: see the next test)."""
    engine = Engine.load(serve_export, "numpy", max_chars=10**6)
    break_after(engine, 50)  # the interpreter breaks after 50 steps
    with serving(create_app(engine, "tiny", limits=Limits(max_request_chars=10**6))) as url:
        r = httpx.post(url + "/v1/completions", json={"prompt": "Pip", "max_tokens": 10**6}, timeout=20)
        assert r.status_code == 500 and "the interpreter broke" in r.json()["error"]["message"]
        assert httpx.get(url + "/health").json() == {"status": "error"}
        r = httpx.post(url + "/v1/completions", json={"prompt": "Pip"})
        assert r.status_code == 500 and r.json()["error"]["code"] == "engine_failed"
    with pytest.raises(EngineFailed, match="the interpreter broke"):
        engine.submit("Pip", 5)


def test_a_broken_scheduler_stops_the_server_with_exit_1(serve_export):
    """A real `estella serve` whose interpreter breaks (fault injected in the real step, so the engine
    runs in the server's own process: --engine thread) answers the request it was serving with an
    error, then exits 1 so that a supervisor restarts it: never a live process that answers only errors.
    (The engine process's own failures: tests/serve/test_engine_process.py.)"""
    port = free_port()
    code = f"""
import sys
from estella.runtime.backends.numpy import NumpyBackend
from estella.runtime.cli import main
step, calls = NumpyBackend.step_trusted, [0]
def failing_step(self, ids, state):
    calls[0] += 1
    if calls[0] > 50:
        raise RuntimeError("the interpreter broke")
    return step(self, ids, state)
NumpyBackend.step_trusted = failing_step
sys.exit(main(["serve", {serve_export!r}, "--backend", "numpy", "--engine", "thread", "--port", "{port}",
               "--max-chars", "1000000", "--max-request-chars", "1000000"]))
"""
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.stream("POST", url + "/v1/completions", timeout=30,
                          json={"prompt": "Pip", "max_tokens": 1000000, "stream": True}) as r:
            events = [line for line in r.iter_lines() if line]
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    message = json.loads(events[-2][6:])["error"]["message"]
    assert message.startswith("the model failed") and "RuntimeError('the interpreter broke')" in message
    assert events[-1] == "data: [DONE]"
    assert process.returncode == 1, output
    assert "stopped so that a supervisor can restart it" in output


def test_one_failing_stream_ends_alone_over_http(serve_export):
    """A fault in one stream's own work (injected in the engine's logprobs for requests asking 4)
    ends that request alone: an SSE error event when streaming, a 500 JSON otherwise, counted as
    500; a request beside it is exact and the server goes on."""
    engine = Engine.load(serve_export, "numpy")
    entry = engine._entry

    def failing_entry(row, c, stream):
        if stream.params.logprobs == 4:
            raise ValueError("injected fault")
        return entry(row, c, stream)

    engine._entry = failing_entry
    reference = Generator.load(serve_export, "numpy")
    try:
        with serving(create_app(engine, "tiny")) as url:
            with httpx.stream("POST", url + "/v1/completions", timeout=30,
                              json={"prompt": "Pip", "max_tokens": 50, "logprobs": 4, "stream": True}) as r:
                events = [line for line in r.iter_lines() if line]
            error = json.loads(events[-2][6:])["error"]
            assert r.status_code == 200 and events[-1] == "data: [DONE]"
            assert error["code"] == "request_failed" and "injected fault" in error["message"]
            r = httpx.post(url + "/v1/completions", json={"prompt": "Pip", "max_tokens": 50, "logprobs": 4}, timeout=30)
            assert r.status_code == 500 and "injected fault" in r.json()["error"]["message"]
            r = httpx.post(url + "/v1/completions", json={"prompt": "Joe", "max_tokens": 60, "seed": 3, "logprobs": 2},
                           timeout=30)
            assert r.json()["choices"][0]["text"] == reference.generate("Joe", 60, seed=3, echo=False)
            assert httpx.get(url + "/health").json() == {"status": "ok"}
            assert 'estella_requests_total{status="500"} 2.0' in httpx.get(url + "/metrics").text
    finally:
        engine.shutdown()


def test_the_server_imports_no_tensorflow_nor_the_build_stages(serve_export):
    """What `estella serve` imports, in a fresh interpreter: the runtime, never TensorFlow or build/export."""
    code = f"""
import sys
from estella.runtime.cli import make_parser
make_parser("serve")
from estella.serve.api import create_app
from estella.serve.engine import Engine
engine = Engine.load({serve_export!r}, "tflite")
create_app(engine)
engine.shutdown()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "onnx")
             or m.startswith(("estella.build", "estella.export", "estella.bench"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_cli_flag_errors_exit_2(tmp_path, capsys):
    from estella.runtime.cli import main

    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 2
    assert "--max-batch must be >= 1, got 0" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0"]) == 2  # warned, then the export is missing
    err = capsys.readouterr().err
    assert "warning: binding 0.0.0.0 without --api-key" in err and "is not an export directory" in err
    allowed = sorted(os.sched_getaffinity(0))
    for cpus in (str(max(allowed) + 1), "a", "1-0", "0,"):
        assert main(["serve", str(tmp_path), "--engine-cpus", cpus]) == 2
        err = capsys.readouterr().err
        assert "--engine-cpus must be CPU ids this process may use" in err and repr(cpus) in err, err
    assert main(["serve", str(tmp_path), "--engine-cpus", str(allowed[0]), "--engine", "thread"]) == 2
    assert "--engine-cpus places the engine process; with --engine thread there is none" in capsys.readouterr().err


def test_a_model_that_cannot_load_stops_the_server_with_exit_2(serve_export, tmp_path, capsys):
    """The port opens at once; an export without the artifact asked for stops the server, whose
    error names it (exit 2, no traceback)."""
    from estella.runtime.cli import main

    manifest = json.load(open(os.path.join(serve_export, "manifest.json"), encoding="utf-8"))
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["format"] == "numpy"]
    for artifact in manifest["artifacts"]:
        for f in artifact["files"]:
            shutil.copy(os.path.join(serve_export, f["path"]), tmp_path / f["path"])
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert main(["serve", str(tmp_path), "--backend", "tflite", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "has no float32 artifact for the tflite backend" in err and "Traceback" not in err


def test_a_bug_in_the_http_layer_answers_500_json(serve_export):
    class BrokenTemplate:  # fault injection: the chat template raises what no check foresaw
        def render(self, messages):
            raise RuntimeError("template bug")

    engine = Engine.load(serve_export, "numpy")
    try:
        with serving(create_app(engine, "tiny", chat_template=BrokenTemplate())) as url:
            r = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "Pip"}]})
            assert r.status_code == 500 and r.headers["content-type"] == "application/json"
            assert r.json()["error"]["code"] == "internal_error" and "template bug" in r.json()["error"]["message"]
            assert httpx.post(url + "/v1/completions", json={"prompt": "Pip"}).status_code == 200
            assert 'estella_requests_total{status="500"} 1.0' in httpx.get(url + "/metrics").text
    finally:
        engine.shutdown()


def closed_by_server(sock, send=b""):
    """True once the server closes the connection (recv gives b""); a 60 s socket timeout fails."""
    sock.settimeout(60)
    if send:
        sock.sendall(send)
    try:
        while sock.recv(65536):
            pass
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize("base", [H11Protocol, HttpToolsProtocol], ids=["h11", "httptools"])
def test_connection_guards_on_either_http_protocol(serve_export, base):
    """Idle, slow and oversized request heads are cut; a connection past the bound is closed at once;
    requests on a kept-alive connection (and a pipelined pair) are still served."""
    engine = Engine.load(serve_export, "numpy")
    http = guarded_http(timeout_header=1, max_connections=3, base=base)
    get = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        with serving(create_app(engine, "tiny"), http=http, timeout_keep_alive=1000) as url:
            port = int(url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port)) as idle:
                assert closed_by_server(idle)
            with socket.create_connection(("127.0.0.1", port)) as slow:
                assert closed_by_server(slow, b"GET /health HTTP/1.1\r\nHost: x\r\n")
            with socket.create_connection(("127.0.0.1", port)) as big:
                assert closed_by_server(big, b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 40000)
            with socket.create_connection(("127.0.0.1", port)) as kept:
                kept.sendall(get + get)  # pipelined
                seen = b""
                while seen.count(b"HTTP/1.1 200") < 2:
                    seen += kept.recv(65536)
                assert closed_by_server(kept)  # then no next head within the header timeout
            with socket.create_connection(("127.0.0.1", port)) as a, socket.create_connection(("127.0.0.1", port)) as b, \
                    socket.create_connection(("127.0.0.1", port)) as c:
                a.sendall(get)
                assert a.recv(65536).startswith(b"HTTP/1.1 200")
                with socket.create_connection(("127.0.0.1", port)) as d:
                    d.settimeout(60)
                    assert d.recv(4096) == b""  # the fourth is closed at once (b and c hold their places)
    finally:
        engine.shutdown()
