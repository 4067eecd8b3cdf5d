"""SIGTERM on a real `estella serve` process: it stops taking requests, ends running streams with
finish_reason "length" after --shutdown-timeout, and exits 0."""

import json
import signal
import threading
import time

import httpx

from estella.serve.process import ServerProcess


def test_sigterm_drains_and_exits_0(serve_export):
    server = ServerProcess(serve_export, "--backend", "tflite", "--max-chars", "100000000", "--max-request-chars", "100000000",
                           "--shutdown-timeout", "1").start()
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
