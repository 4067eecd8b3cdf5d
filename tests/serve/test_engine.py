"""The engine alone (no HTTP): continuous batching, the queue, cancellation, stop reasons, determinism."""

import math
import time

import numpy as np
import pytest

from estella.runtime.errors import SettingError
from estella.runtime.generator import Generator
from estella.serve.engine import Delta, Draining, Engine, EngineFailed, Life, QueueFull

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
    """Each stream's Completion (text, finish_reason, logprobs, error), once all have finished."""
    return [s.result(timeout) for s in streams]


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
    made = [engine.make_stream(r["prime"], engine.request_params(r["max_chars"], temperature=r["temperature"],
                                                                 top_k=r["top_k"], top_p=r["top_p"], seed=r["seed"]))
            for r in requests]
    streams = engine.add(made[:10])  # 6 run, 4 wait
    for s in made[10:]:
        time.sleep(0.001)  # the others come while the batch runs and join at whatever tick
        streams += engine.add([s])
    for r, done in zip(requests, wait_all(streams)):
        expected = reference.generate(r["prime"], r["max_chars"], r["temperature"], r["top_k"], r["top_p"],
                                      seed=r["seed"], echo=False)
        assert (done.text, done.finish_reason) == (expected, "length"), r
    assert max(steps) == 6 and min(steps) < 6  # the batch filled up and emptied as streams left


def test_streams_join_and_leave_at_any_tick(make_engine):
    steps = []
    engine = make_engine(max_batch=32, on_step=steps.append)
    long = engine.submit("Pip", 3000, seed=1)
    while len(steps) < 50:
        time.sleep(0.001)
    short = engine.add([engine.make_stream("Joe", engine.request_params(n, seed=n)) for n in (1, 7, 30)])
    short = wait_all(short)  # they joined together
    deadline = time.monotonic() + 10
    while engine.running != 1 and time.monotonic() < deadline:  # they leave in the tick they finish in
        time.sleep(0.001)
    assert not long.done.is_set() and engine.running == 1  # the short ones left, the long one runs on
    assert [len(s.text) for s in short] == [1, 7, 30] and len(long.result(30).text) == 3000
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
    assert streams[0].result(5).finish_reason == "cancelled"
    deadline = time.monotonic() + 5
    while engine.waiting != 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert engine.waiting == 2 and engine.running == 2
    params = engine.request_params(10)
    with pytest.raises(QueueFull):  # all or none: two streams do not fit one free place
        engine.add([engine.make_stream("Pip", params), engine.make_stream("Joe", params)])
    assert engine.waiting == 2
    for s in streams:
        engine.cancel(s)
    wait_all(streams)


def test_cancel_running_and_waiting(make_engine):
    engine = make_engine(max_batch=1, max_chars=10**6)
    running = engine.submit("Pip", 10**6)
    waiting = engine.submit("Joe", 10)
    got = []
    while not got:
        got += [running.take()] if running.has_news() else []
        time.sleep(0.001)
    engine.cancel(waiting)
    assert waiting.done.is_set() and waiting.result(0)[:2] == ("", "cancelled")
    engine.cancel(running)
    assert running.done.wait(5)
    got.append(running.take())
    assert got[-1].finish_reason == "cancelled" and 0 < len("".join(d.text for d in got)) < 10**6
    deadline = time.monotonic() + 5
    while engine.running and time.monotonic() < deadline:
        time.sleep(0.001)
    assert engine.running == 0 and engine.waiting == 0


def test_every_stop_reason(make_engine, serve_export):
    engine = make_engine()
    reference = Generator.load(serve_export, "tflite").generate("Pip", 300, 1.0, seed=5, echo=False)
    stop = reference[40:43]  # a stop string the seeded text meets
    at = reference.find(stop)
    stopped = engine.submit("Pip", 300, seed=5, stop=["never-met", stop])
    length = engine.submit("Pip", 300, seed=5, stop="never-met")
    empty = engine.submit("Pip", 0, seed=5)
    stopped, length, empty = wait_all([stopped, length, empty])
    # The stop string ends the text and is not part of it (OpenAI's rule); what came before is exact.
    assert (stopped.finish_reason, stopped.text) == ("stop", reference[:at])
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
    s = engine.make_stream("Pip", engine.request_params(200, temperature=0.0, stop=stop))
    s.start()  # (what Engine.add does)
    engine._join([s])
    seen, deltas = [], []
    while engine._rows:
        engine._tick()
        deltas += [s.take() or Delta("", None, None)]
        seen.append((s.generated, sum(len(d.text) for d in deltas)))
    assert "".join(d.text for d in deltas) == reference and deltas[-1].finish_reason == "length"
    # After n characters, the longest start of the stop string that the text ends with is held back.
    expected = [(n, n - max((k for k in range(1, len(stop)) if reference[:n].endswith(stop[:k])), default=0))
                for n in range(1, 200)] + [(200, 200)]
    assert seen[3:] == expected  # (the first three ticks feed the prime)
    assert (52, 50) in seen  # reference[50:52] was held back


def test_logprobs_are_the_model_distribution(make_engine):
    engine = make_engine()
    done = engine.submit("Pip", 30, temperature=0.0, logprobs=3).result(30)
    assert len(done.logprobs) == 30
    for ch, (char, lp, top) in zip(done.text, done.logprobs):
        top = dict(top)
        assert char == ch and len(top) == 3 and list(top.values()) == sorted(top.values(), reverse=True)
        assert next(iter(top)) == ch and top[ch] == lp  # greedy picks the likeliest
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-9


def test_bad_settings_carry_their_field(make_engine):
    engine = make_engine(max_chars=100)
    bad = [
        (dict(temperature=-1), "temperature", "must be a finite number >= 0"),
        (dict(temperature=float("nan")), "temperature", "must be a finite number >= 0"),
        (dict(top_p=0.0), "top_p", r"must be in \(0, 1\]"),
        (dict(top_p=1.5), "top_p", r"must be in \(0, 1\]"),
        (dict(top_k=0), "top_k", "must be an integer >= 1"),
        (dict(top_k=2**63), "top_k", "must be an integer >= 1"),
        (dict(max_chars=-1), "max_chars", "must be an integer from 0 to 100"),
        (dict(max_chars=101), "max_chars", "must be an integer from 0 to 100"),
        (dict(stop=""), "stop", "must be a non-empty string"),
        (dict(stop=["a", ""]), "stop", "must be a non-empty string"),
        (dict(seed=-3), "seed", "must be an integer from 0 to"),
        (dict(seed=2**63), "seed", "must be an integer from 0 to"),
        (dict(logprobs=-1), "logprobs", "must be an integer from 0 to"),
    ]
    for settings, field, message in bad:
        with pytest.raises(SettingError, match=f"^{field} {message}") as e:
            engine.request_params(**{"max_chars": 10, **settings})
        assert e.value.field == field
    with pytest.raises(SettingError, match=r"not in the vocabulary: \['\\x00', '\\x01'\]") as e:
        engine.make_stream("Pip\x00\x01", engine.request_params(10))
    assert e.value.field == "prime"


def test_drain_ends_running_streams_with_length(make_engine):
    engine = make_engine(max_batch=2, max_chars=10**6)
    short = engine.submit("Joe", 5)
    streams = [engine.submit("Pip", 10**6) for _ in range(3)]  # the last waits, and never runs
    started = time.monotonic()
    engine.drain(0.2)
    assert 0.15 < time.monotonic() - started < 5
    done = wait_all(streams + [short])
    assert all(d.finish_reason == "length" for d in done)
    assert len(done[-1].text) == 5 and len(done[0].text) > 0
    assert engine.life is Life.ENDING
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


@pytest.mark.parametrize("backend", ["numpy", "onnx", "tflite"])
def test_a_long_prime_is_fed_in_chunks_with_the_text_of_generate(make_engine, serve_export, corpus_text, backend):
    """A prime longer than a chunk is read over several ticks; the text equals Generator's, which
    runs the prime in one call."""
    prime = corpus_text(1000)
    engine = make_engine(backend, prefill_chunk=64, prefill_budget=100)
    done = engine.submit(prime, 50, seed=3).result(60)
    assert done.text == Generator.load(serve_export, backend).generate(prime, 50, seed=3, echo=False)


@pytest.mark.parametrize("backend", ["numpy", "onnx", "tflite"])
def test_a_1mb_prime_never_holds_up_another_stream(make_engine, corpus_text, backend):
    """While a 1 MB prime is read, another stream gets a character at every tick, and the work
    between two of its characters (characters through the model, counted at the backend) stays
    within the prefill budget plus the batch: the prime is fed in bounded chunks, not in one call."""
    engine = make_engine(backend, max_chars=10**6, prefill_chunk=256, prefill_budget=1024)
    backend_step, stepped = engine.backend.step_trusted, [0]

    def counting_step(ids, state):  # the real step, counted
        stepped[0] += ids.size
        return backend_step(ids, state)

    engine.backend.step_trusted = counting_step
    other = engine.submit("Pip", 10**6, seed=1)
    while other.take() is None:
        time.sleep(0.001)
    ticks = []  # per tick, on the scheduler thread: (characters stepped so far, the other stream's length)

    def on_step(batch):
        engine.flush()  # (the other stream's characters so far are handed out in bulk)
        ticks.append((stepped[0], other.generated))

    engine.on_step = on_step
    big = engine.submit(corpus_text(10**6), 5, seed=2)
    while len(ticks) < 300:
        time.sleep(0.01)
    engine.on_step = None
    assert not big.done.is_set()  # still reading its prime
    engine.cancel(big)
    engine.cancel(other)
    gaps = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(ticks, ticks[1:])]
    assert all(chars == 1 for _, chars in gaps)  # one character per tick for the other stream
    assert max(work for work, _ in gaps) <= 1024 + 2


def test_a_failing_stream_ends_alone(make_engine, serve_export):
    """A stream whose own work fails (here: a logprobs value no check let through, set by hand)
    ends with finish_reason "error" and a message; the stream beside it and later ones are exact."""
    engine = make_engine("numpy")
    reference = Generator.load(serve_export, "numpy")
    bad_params = engine.request_params(100, seed=1, logprobs=2)
    object.__setattr__(bad_params, "logprobs", "two")  # past the checks: fails in the scheduler
    bad = engine.make_stream("Pip", bad_params)
    good = engine.make_stream("Joe", engine.request_params(200, seed=2))
    engine.add([good, bad])
    bad, good = bad.result(30), good.result(30)
    assert bad.finish_reason == "error" and "this request failed" in bad.error and "TypeError" in bad.error
    assert (good.text, good.finish_reason) == (reference.generate("Joe", 200, seed=2, echo=False), "length")
    assert engine.life is Life.SERVING
    later = engine.submit("Pip", 30, seed=4).result(30)
    assert later.text == reference.generate("Pip", 30, seed=4, echo=False)


def test_a_broken_backend_fails_the_engine_and_says_so(make_engine, break_after):
    """When every row's step fails (the interpreter broke), the engine is FAILED: streams end with
    "error", nothing new is taken, and on_fatal is called (the server then exits non-zero)."""
    fatal = []
    engine = make_engine("numpy", max_chars=10**6, on_fatal=fatal.append)
    break_after(engine, 50)  # the interpreter breaks after 50 steps
    streams = [engine.submit("Pip", 10**6, seed=i) for i in range(3)]
    done = wait_all(streams)
    assert all(d.finish_reason == "error" and "the interpreter broke" in d.error for d in done)
    assert engine.life is Life.FAILED and len(fatal) == 1 and "every stream's step failed" in str(fatal[0])
    with pytest.raises(EngineFailed, match="the interpreter broke"):
        engine.submit("Pip", 5)


def test_a_stacked_lstm_is_served_like_generate(lstm_export):
    """The state row is opaque to the engine: a 2-layer LSTM (S = 2 x (16 + 12)) serves seeded
    concurrent requests, long primes fed in chunks, with the texts of Generator."""
    engine = Engine.load(lstm_export, "numpy", max_batch=4, prefill_chunk=16, prefill_budget=40)
    reference = Generator.load(lstm_export, "numpy")
    try:
        primes = ["Pip and Joe went on. " * k for k in (1, 3, 7, 12, 0)]
        streams = [engine.submit(p, 60 + 7 * i, seed=i, temperature=0.9) for i, p in enumerate(primes)]
        for i, (p, done) in enumerate(zip(primes, wait_all(streams))):
            assert done.text == reference.generate(p, 60 + 7 * i, 0.9, seed=i, echo=False)
    finally:
        engine.shutdown()


@pytest.mark.parametrize("backend", ["tflite", "numpy"])
@pytest.mark.parametrize("where", ["thread", "process"])
def test_streams_of_one_two_and_three_characters_beside_others(make_engine, serve_export, backend, where):
    """A plain stream's characters are handed out in bulk and its end is counted by the engine: the
    shortest streams (their first character is also their last) get exactly their text and
    "length", beside a long one, one with a stop string and one with logprobs; in this process
    (handed out every tick) and in an engine process (every few milliseconds)."""
    from estella.serve.engine_process import EngineProcess

    if where == "thread":
        engine = make_engine(backend)
    else:
        engine = EngineProcess(serve_export, backend)
    try:
        reference = Generator.load(serve_export, backend)
        asked = [("Pip", 1, {}), ("Joe", 2, {}), ("The ", 3, {}), ("It was", 300, {}),
                 ("a", 3, {"stop": "\x00"}), ("Mr. ", 2, {"logprobs": 2})]
        streams = [engine.submit(prime, n, seed=i, **extra) for i, (prime, n, extra) in enumerate(asked)]
        for i, ((prime, n, extra), done) in enumerate(zip(asked, wait_all(streams))):
            assert (done.text, done.finish_reason) == (reference.generate(prime, n, seed=i, echo=False), "length")
            assert (done.logprobs is not None) == ("logprobs" in extra)
    finally:
        if where == "process":
            engine.shutdown()
