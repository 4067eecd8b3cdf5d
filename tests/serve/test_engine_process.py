"""The engine in its own process (EngineProcess: what `estella serve` runs unless --engine thread):
the same texts as the engine in this process, the same life cycle, and an engine process that dies
or whose scheduler fails ends its streams with an error and calls on_fatal (the server exits 1)."""

import json
import math
import os
import pickle
import signal
import threading
from multiprocessing.connection import Pipe

import httpx
import pytest

from estella.runtime.errors import EstellaError
from estella.runtime.generator import Generator
from estella.serve.engine import Draining, Engine, EngineFailed, Life, QueueFull
from estella.serve.engine_process import Child, EngineProcess
from estella.serve.process import ServerProcess

# (prime, max_chars, settings): plain, stop strings, logprobs, greedy, cut by k and p, an empty prime
REQUESTS = [("Pip", 40, {"seed": 1}), ("Joe", 60, {"seed": 2, "stop": ["e ", "th"]}),
            ("The ", 30, {"seed": 3, "logprobs": 3}), ("a", 25, {"temperature": 0.0}),
            ("It was", 50, {"seed": 4, "top_k": 5, "top_p": 0.9, "stop": "\n", "logprobs": 0}), ("", 20, {"seed": 5}),
            ("Mr. ", 0, {"seed": 6})]


@pytest.fixture
def engines():
    started = []
    yield started
    for engine in started:
        engine.shutdown()


def first_news(stream, timeout=30):
    """Wait until the stream has been handed something."""
    got = threading.Event()
    stream.on_delta(got.set)
    if not stream.has_news():
        assert got.wait(timeout)


@pytest.mark.parametrize("backend", ["tflite", "numpy"])
def test_completions_equal_the_engine_in_this_process(serve_export, engines, backend):
    """Every request's Completion (text, finish reason, error, logprobs) is the one the engine in this
    process gives, all running at once with more streams than the batch; seeded plain streams equal
    generate_many; on_step hears every tick's batch size. (Logprobs to float32 rounding: a numpy step's
    last bits depend on how many rows the batch has, and the two engines' batches form at their own
    pace.)"""
    sizes = []
    in_process = Engine.load(serve_export, backend, max_batch=4)
    engines.append(in_process)
    remote = EngineProcess(serve_export, backend, max_batch=4, on_step=sizes.append)
    engines.append(remote)
    assert remote.vocab == in_process.vocab and remote.backend.name == backend
    expected = [in_process.submit(p, n, **kw) for p, n, kw in REQUESTS]
    got = [remote.submit(p, n, **kw) for p, n, kw in REQUESTS]
    for remote_result, local_result in zip([s.result(60) for s in got], [s.result(60) for s in expected]):
        assert remote_result._replace(logprobs=None) == local_result._replace(logprobs=None)
        assert same_logprobs(remote_result.logprobs, local_result.logprobs)
    texts = Generator.load(serve_export, backend).generate_many(["Pip", "Pip"], 40, seed=1, echo=False)
    assert [remote.submit("Pip", 40, seed=1 + i).result(60).text for i in range(2)] == texts
    assert sizes and 1 <= min(sizes) and max(sizes) <= 4


def same_logprobs(a, b, tolerance=1e-4):
    """Per character: the same character, its logprob and the k likeliest logprobs within tolerance."""
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(
        c == d and math.isclose(lp, lq, abs_tol=tolerance) and len(top) == len(pot)
        and all(math.isclose(x, y, abs_tol=tolerance) for (_, x), (_, y) in zip(top, pot))
        for (c, lp, top), (d, lq, pot) in zip(a, b))


def test_cancel_queue_full_drain_and_shutdown(serve_export):
    engine = EngineProcess(serve_export, "numpy", max_batch=1, max_queue=1, max_chars=10**6)
    running = engine.submit("Pip", 10**6, seed=1)
    waiting = engine.submit("Joe", 10**6, seed=2)
    with pytest.raises(QueueFull, match="1 running, 1 waiting at most"):
        engine.submit("a", 5)
    first_news(running)
    engine.cancel(waiting)
    engine.cancel(running)
    assert running.result(30).finish_reason == waiting.result(30).finish_reason == "cancelled"
    assert len(engine.submit("Pip", 7, seed=1).result(30).text) == 7  # both places are free again
    long = engine.submit("Pip", 10**6)
    first_news(long)
    engine.drain(0.1)  # a stream that has not finished by then ends as if its length was reached
    assert long.result(30).finish_reason == "length" and engine.life is Life.ENDING
    with pytest.raises(Draining):
        engine.submit("Pip", 5)
    engine.shutdown()
    assert engine.life is Life.CLOSED and engine._process.returncode == 0


def test_a_dead_engine_process_ends_its_streams_and_calls_on_fatal(serve_export):
    fatal = threading.Event()
    errors = []
    engine = EngineProcess(serve_export, "numpy", max_chars=10**6, on_fatal=lambda e: (errors.append(e), fatal.set()))
    stream = engine.submit("Pip", 10**6)
    first_news(stream)
    os.kill(engine.pid, signal.SIGKILL)
    result = stream.result(30)
    assert result.finish_reason == "error" and "the engine process exited with code -9" in result.error
    assert fatal.wait(30) and isinstance(errors[0], EngineFailed)
    assert engine.life is Life.FAILED
    with pytest.raises(EngineFailed, match="exited with code -9"):
        engine.submit("Pip", 5)
    engine.shutdown()  # nothing left to stop: returns at once


def test_a_failing_scheduler_in_the_child_is_reported(serve_export, break_after):
    """The child's side (Child, the code the engine process runs) over a real pipe: once its
    scheduler cannot go on, each stream's error goes first, then ("failed", the error)."""
    engine = Engine.load(serve_export, "numpy", max_chars=10**6)
    break_after(engine, 20)  # the interpreter breaks after 20 steps
    received, sent = Pipe(duplex=False)
    commands, _ = Pipe(duplex=False)  # (none are sent here: the test adds the stream itself)
    child = Child(sent, commands)
    child.start(engine)
    child.add([(7, "Pip", engine.request_params(10**6))])
    items = []
    while (message := pickle.loads(received.recv_bytes()))[0] != "failed":
        items += [item for key, stream_items in message[1] for item in stream_items if key == 7]
    assert "the interpreter broke" in message[1]
    assert items[-1].finish_reason == "error" and "the interpreter broke" in items[-1].error
    engine.shutdown()


def test_a_model_that_cannot_load_raises_its_error(tmp_path):
    with pytest.raises(EstellaError, match="manifest.json"):
        EngineProcess(str(tmp_path), "numpy")


def test_a_killed_engine_process_stops_the_server_with_exit_1(serve_export):
    """`estella serve` (its engine in a process, the default) whose engine process is killed ends the
    running stream with an SSE error event and exits 1, for a supervisor to restart it."""
    server = ServerProcess(serve_export, "--backend", "numpy", "--max-chars", 10**6, "--max-request-chars", 10**6)
    server.start()
    try:
        engine_pid = server.pids()[1]
        with httpx.stream("POST", server.url + "/v1/completions", timeout=60,
                          json={"prompt": "Pip", "max_tokens": 10**6, "stream": True}) as r:
            lines = (line for line in r.iter_lines() if line)
            assert next(lines).startswith("data: {")
            os.kill(engine_pid, signal.SIGKILL)
            events = list(lines)
        code = server.process.wait(60)
    finally:
        returncode, output = server.stop()
    error = json.loads(events[-2][6:])["error"]
    assert "the engine process exited with code -9" in error["message"] and events[-1] == "data: [DONE]"
    assert code == 1 and "stopped so that a supervisor can restart it" in output, output


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="an engine on a CPU of its own needs two CPUs")
def test_engine_cpus_puts_the_engine_process_on_its_cpus_and_the_http_side_on_the_others(serve_export):
    """`estella serve --engine-cpus N`: every thread of the engine process may run on N only, every
    thread of the HTTP side on the other CPUs, and the texts are those of `estella generate`."""
    allowed = sorted(os.sched_getaffinity(0))
    engine_cpu, others = allowed[-1], set(allowed[:-1])
    server = ServerProcess(serve_export, "--backend", "numpy", "--engine-cpus", engine_cpu)
    server.start()
    try:
        r = httpx.post(server.url + "/v1/completions", timeout=60,
                       json={"prompt": "Pip", "max_tokens": 40, "seed": 1, "temperature": 0.5})
        http_pid, engine_pid = server.pids()
        placed = {pid: [os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]
                  for pid in (http_pid, engine_pid)}
    finally:
        server.stop()
    assert r.status_code == 200
    expected = Generator.load(serve_export, "numpy").generate("Pip", 40, 0.5, seed=1, echo=False)
    assert r.json()["choices"][0]["text"] == expected
    assert len(placed[engine_pid]) >= 2 and all(cpus == {engine_cpu} for cpus in placed[engine_pid])
    assert all(cpus == others for cpus in placed[http_pid])


def test_the_engine_process_exits_once_the_server_is_gone(serve_export):
    """The child reads its commands on the scheduler's own thread: when the server's end of the pipe
    closes (the server died without a word), it ends its streams and exits, running or idle."""
    for running in (True, False):
        engine = EngineProcess(serve_export, "numpy", max_chars=10**6)
        if running:
            first_news(engine.submit("Pip", 10**6))
        engine._commands.close()  # what the server's death does to the pipe
        assert engine._process.wait(30) == 0
