"""The engine alone (no HTTP): continuous batching, the queue, cancellation, stop reasons, determinism."""

import math
import time

import numpy as np
import pytest

from estella.runtime.errors import EstellaError
from estella.runtime.generator import Generator
from estella.serve.engine import Draining, Engine, QueueFull

PRIMES = ["Pip", "Joe", "The ", "I said", "", "Mr. ", "a", "It was"]
# (temperature, top_k, top_p): greedy, plain, cut by k, by p, by both
SETTINGS = [(0.0, None, None), (1.0, None, None), (0.7, 5, None), (1.2, None, 0.8), (0.5, 10, 0.9)]


@pytest.fixture
def make_engine(serve_export):
    engines = []

    def make(backend="tflite", precision="float32", **options):
        engine = Engine.load(serve_export, backend, precision, **options)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.shutdown()


def wait_all(streams, timeout=30):
    for s in streams:
        assert s.done.wait(timeout), "a stream did not finish"


@pytest.mark.parametrize("backend,precision", [("tflite", "float32"), ("onnx", "float32"), ("numpy", "float32"),
                                               ("tflite", "int8")])
def test_seeded_requests_equal_generate_under_concurrency(make_engine, serve_export, backend, precision):
    """16 seeded requests of mixed settings and lengths, more than the batch (some wait), submitted
    while others run (they join at any tick): each text equals Generator.generate alone.
    (Not onnx int8: it quantizes activations over the whole batch; see the README.)"""
    steps = []
    engine = make_engine(backend, precision, max_batch=6, on_step=steps.append)
    reference = Generator.load(serve_export, backend, precision)
    requests = [dict(prime=PRIMES[i % len(PRIMES)], max_chars=20 + 13 * i, seed=100 + i,
                     temperature=SETTINGS[i % 5][0], top_k=SETTINGS[i % 5][1], top_p=SETTINGS[i % 5][2])
                for i in range(16)]
    made = [engine.make_stream(r["prime"], r["max_chars"], temperature=r["temperature"], top_k=r["top_k"],
                               top_p=r["top_p"], seed=r["seed"]) for r in requests]
    streams = engine.add(made[:10])  # 6 run, 4 wait
    for s in made[10:]:
        time.sleep(0.001)  # the others come while the batch runs and join at whatever tick
        streams += engine.add([s])
    wait_all(streams)
    for r, s in zip(requests, streams):
        expected = reference.generate(r["prime"], r["max_chars"], r["temperature"], r["top_k"], r["top_p"],
                                      seed=r["seed"], echo=False)
        assert (s.text, s.finish_reason) == (expected, "length"), r
    assert max(steps) == 6 and min(steps) < 6  # the batch filled up and emptied as streams left


def test_streams_join_and_leave_at_any_tick(make_engine):
    steps = []
    engine = make_engine(max_batch=32, on_step=steps.append)
    long = engine.submit("Pip", 3000, seed=1)
    while len(steps) < 50:
        time.sleep(0.001)
    short = engine.add([engine.make_stream("Joe", n, seed=n) for n in (1, 7, 30)])  # they join together
    wait_all(short)
    assert long.finish_reason is None and engine.running == 1  # the short ones left, the long one runs on
    wait_all([long])
    assert [len(s.text) for s in short] == [1, 7, 30] and len(long.text) == 3000
    sizes = set(steps)
    assert {1, 2, 3, 4} <= sizes  # alone, joined by three (their primes fed in the batch), then they leave one by one
    assert engine.running == 0


def test_queue_is_bounded_and_fifo(make_engine):
    engine = make_engine(max_batch=2, max_queue=3, max_chars=10**6)
    streams = [engine.submit("Pip", 10**6, seed=i) for i in range(5)]  # 2 running, 3 waiting
    with pytest.raises(QueueFull, match="2 running, 3 waiting at most"):
        engine.submit("Pip", 10)
    time.sleep(0.05)
    assert (engine.running, engine.waiting) == (2, 3)
    engine.cancel(streams[0])  # a running one leaves at the next tick; the first waiting one takes its place
    assert streams[0].done.wait(5) and streams[0].finish_reason == "cancelled"
    deadline = time.monotonic() + 5
    while streams[2].fed == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert streams[2].fed > 0 and streams[3].fed == 0 and engine.waiting == 2
    with pytest.raises(QueueFull):  # all or none: two streams do not fit one free place
        engine.add([engine.make_stream("Pip", 10), engine.make_stream("Joe", 10)])
    assert engine.waiting == 2
    for s in streams:
        engine.cancel(s)
    wait_all(streams)


def test_cancel_running_and_waiting(make_engine):
    engine = make_engine(max_batch=1, max_chars=10**6)
    running = engine.submit("Pip", 10**6)
    waiting = engine.submit("Joe", 10)
    while not running.chars:
        time.sleep(0.001)
    engine.cancel(waiting)
    assert waiting.done.is_set() and waiting.finish_reason == "cancelled" and waiting.text == ""
    engine.cancel(running)
    assert running.done.wait(5) and running.finish_reason == "cancelled"
    deadline = time.monotonic() + 5
    while engine.running and time.monotonic() < deadline:
        time.sleep(0.001)
    assert engine.running == 0 and engine.waiting == 0
    assert 0 < len(running.chars) < 10**6


def test_every_stop_reason(make_engine, serve_export):
    engine = make_engine()
    reference = Generator.load(serve_export, "tflite").generate("Pip", 300, 1.0, seed=5, echo=False)
    stop = reference[40:43]  # a stop string the seeded text meets
    at = reference.find(stop)
    stopped = engine.submit("Pip", 300, seed=5, stop=["never-met", stop])
    length = engine.submit("Pip", 300, seed=5, stop="never-met")
    empty = engine.submit("Pip", 0, seed=5)
    wait_all([stopped, length, empty])
    # The stop string ends the text and is not part of it (OpenAI's rule); what came before is exact.
    assert (stopped.finish_reason, stopped.text) == ("stop", reference[:at])
    assert stopped.chars == list(reference[:at + len(stop)])
    # A partial match of a stop string was held back and then published: the text is whole.
    assert (length.finish_reason, length.text) == ("length", reference)
    assert (empty.finish_reason, empty.text) == ("length", "")


def test_held_back_characters_are_not_published_early(make_engine, serve_export):
    """While the text ends with the start of a stop string, those characters are not yet text.
    The scheduler is driven tick by tick here, to see every tick."""
    engine = make_engine()
    engine.shutdown()  # no scheduler thread: this test ticks by hand
    reference = Generator.load(serve_export, "tflite").generate("Pip", 200, 0.0, echo=False)
    stop = reference[50:52] + "\x00"  # met as the text goes on, never completed (\x00 is not in the vocab)
    s = engine.make_stream("Pip", 200, temperature=0.0, stop=stop)
    engine._join([s])
    seen = []
    while engine._rows:
        engine._tick()
        seen.append((len(s.chars), s.published))
    assert s.text == reference and s.finish_reason == "length"
    # After n characters, the longest start of the stop string that the text ends with is held back.
    expected = [(n, n - max((k for k in range(1, len(stop)) if reference[:n].endswith(stop[:k])), default=0))
                for n in range(1, 200)] + [(200, 200)]
    assert seen[3:] == expected  # (the first three ticks feed the prime)
    assert (52, 50) in seen  # reference[50:52] was held back


def test_logprobs_are_the_model_distribution(make_engine):
    engine = make_engine()
    s = engine.submit("Pip", 30, temperature=0.0, logprobs=3)
    wait_all([s])
    assert len(s.token_logprobs) == len(s.top_logprobs) == 30
    for ch, lp, top in zip(s.chars, s.token_logprobs, s.top_logprobs):
        assert len(top) == 3 and list(top.values()) == sorted(top.values(), reverse=True)
        assert next(iter(top)) == ch and top[ch] == lp  # greedy picks the likeliest
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-9


def test_bad_settings_raise_the_cli_messages(make_engine):
    engine = make_engine(max_chars=100)
    bad = [
        (dict(temperature=-1), "--temperature must be a finite number >= 0"),
        (dict(temperature=float("nan")), "--temperature must be a finite number >= 0"),
        (dict(top_p=0.0), r"--top-p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"--top-p must be in \(0, 1\]"),
        (dict(top_k=0), "--top-k must be an integer >= 1"),
        (dict(max_chars=-1), "--chars must be an integer from 0 to 100"),
        (dict(max_chars=101), "--chars must be an integer from 0 to 100"),
        (dict(stop=""), "--stop must be a non-empty string"),
        (dict(stop=["a", ""]), "--stop must be a non-empty string"),
        (dict(seed=-3), "--seed must be an integer >= 0"),
        (dict(logprobs=-1), "--logprobs must be an integer from 0 to"),
        (dict(prime="Pip\x00\x01"), r"not in the vocabulary: \['\\x00', '\\x01'\]"),
    ]
    for settings, message in bad:
        args = {"prime": "Pip", "max_chars": 10, **settings}
        with pytest.raises(EstellaError, match=message):
            engine.make_stream(args.pop("prime"), args.pop("max_chars"), **args)


def test_drain_ends_running_streams_with_length(make_engine):
    engine = make_engine(max_batch=2, max_chars=10**6)
    short = engine.submit("Joe", 5)
    streams = [engine.submit("Pip", 10**6) for _ in range(3)]  # the last waits, and never runs
    started = time.monotonic()
    engine.drain(0.2)
    assert 0.15 < time.monotonic() - started < 5
    assert all(s.done.is_set() and s.finish_reason == "length" for s in streams + [short])
    assert len(short.text) == 5 and len(streams[0].text) > 0
    with pytest.raises(Draining):
        engine.submit("Pip", 10)


def test_tflite_int8_rows_do_not_depend_on_the_batch(serve_export):
    """tflite int8 quantizes activations per row: a stream's logits are the same alone or in a batch."""
    gen = Generator.load(serve_export, "tflite", "int8")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(gen.vocab), (32, 100)).astype(np.int32)
    alone, batch = gen.initial_state(1), gen.initial_state(32)
    for t in range(ids.shape[1]):
        logits_alone, alone = gen.step(ids[:1, t:t + 1], alone)
        logits_batch, batch = gen.step(ids[:, t:t + 1], batch)
        assert np.array_equal(logits_alone[0], logits_batch[0])
