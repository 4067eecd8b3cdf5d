"""SIGTERM on a real `estella serve` process: it stops taking requests, ends running streams with
finish_reason "length" after --shutdown-timeout, and exits 0."""

import json
import signal
import threading
import time

import httpx
import pytest

from estella.serve.process import ServerProcess


def test_sigterm_drains_and_exits_0(serve_export):
    server = ServerProcess(serve_export, "--backend", "tflite", "--max-chars", "100000000",
                           "--max-request-chars", "100000000", "--shutdown-timeout", "1").start()
    events, started = [], threading.Event()

    def long_stream():
        with httpx.stream("POST", server.url + "/v1/completions", timeout=30,
                          json={"prompt": "Pip", "max_tokens": 100_000_000, "stream": True}) as r:
            for line in r.iter_lines():
                if line:
                    events.append(line)
                    started.set()

    thread = threading.Thread(target=long_stream)
    thread.start()
    try:
        assert started.wait(20)
        server.process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        time.sleep(0.2)
        health = httpx.get(server.url + "/health")
        assert (health.status_code, health.json()) == (503, {"status": "draining"})
        refused = httpx.post(server.url + "/v1/completions", json={"prompt": "Joe", "max_tokens": 5})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
        thread.join(30)
        output, _ = server.process.communicate(timeout=30)  # no second signal: it exits by itself
        code, took = server.process.returncode, time.monotonic() - sent
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert code == 0, output
    assert 0.9 < took < 15
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"


def wait_for_health(server, status):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if httpx.get(server.url + "/health").json()["status"] == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"/health never said {status!r}")


@pytest.mark.parametrize("signals,exit_code", [((signal.SIGTERM, signal.SIGTERM), 0), ((signal.SIGINT,), 130),
                                               ((signal.SIGTERM, signal.SIGINT), 130)])
def test_a_second_signal_or_ctrl_c_stops_at_once(serve_export, signals, exit_code):
    """With a drain that would last 1000 s and a stream of 10^8 characters, a second SIGTERM (or a
    Ctrl-C, first or second) ends the stream with "length" and the process exits by itself: no
    timing is assumed, the process either exits or the generous wait fails."""
    server = ServerProcess(serve_export, "--backend", "tflite", "--max-chars", "100000000",
                           "--max-request-chars", "100000000", "--shutdown-timeout", "1000").start()
    events, started = [], threading.Event()

    def long_stream():
        try:
            with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                              json={"prompt": "Pip", "max_tokens": 100_000_000, "stream": True}) as r:
                for line in r.iter_lines():
                    if line:
                        events.append(line)
                        started.set()
        except httpx.HTTPError:
            events.append("closed")  # stopping at once may cut the connection before the last event

    thread = threading.Thread(target=long_stream)
    thread.start()
    try:
        assert started.wait(20)
        for i, sig in enumerate(signals):
            if i:
                wait_for_health(server, "draining")  # the first signal was handled
            server.process.send_signal(sig)
        output, _ = server.process.communicate(timeout=60)
    finally:
        if server.process.poll() is None:
            server.process.kill()
        thread.join(60)
    assert server.process.returncode == exit_code, output
    assert "Traceback" not in output
    assert events[-1] in ("data: [DONE]", "closed")
