"""The serving engine, without HTTP: one scheduler thread owns the backend and steps every running
stream in one batched call per tick (continuous batching).

    engine = Engine.load("runs/default/export", backend="tflite", max_batch=32)
    stream = engine.submit("Pip", 200, temperature=0.5, seed=1)
    stream.done.wait(); print(stream.text)
    engine.shutdown()

A GRU stream's whole context is its state row, so a stream joins or leaves the batch at any tick:
its row is added to or cut from the [B, S] state. Each tick:
  1. samples every stream whose logits are ready in ONE call of the runtime's sampler
     (sample_batch), each stream drawing one uniform per character from its own
     np.random.default_rng(seed), exactly as Generator does: a seeded stream writes the text
     `estella generate` writes with the same seed, whatever runs beside it;
  2. hands each stream its character; a finished stream leaves at once and frees its slot;
  3. steps all remaining streams in one backend call.

Primes. On a backend whose graph takes T > 1 characters (numpy, onnx), a joining stream's prime runs
in one call between ticks, as Generator runs it (the same math, so the same text). On a graph
made for T = 1 (tflite), the prime is fed one character per tick as that stream's input in the
shared batched step: a prime then costs its length in ticks of the whole batch (a fraction of a
millisecond each) and never stalls the running streams, as running it alone character by
character between ticks would; time to the first character stays a few ticks for short primes.

Logprobs are of the model's own distribution (temperature 1, before top-k/top-p), as vLLM reports
by default: they say what the model thinks, not what the sampling settings cut.
"""

import collections
import numbers
import threading
import time
import traceback

import numpy as np

from estella.runtime.errors import EstellaError
from estella.runtime.generator import Generator, check_seed, stop_list
from estella.runtime.sampling import BatchSampler, check_settings


class QueueFull(EstellaError):
    """Every batch slot and every queue place is taken: try again later."""


class Draining(EstellaError):
    """The engine is shutting down and takes no new requests."""


class EngineFailed(EstellaError):
    """The scheduler stopped on an error (printed with its traceback on the server's stderr)."""


class Stream:
    """One request inside the engine. The scheduler thread appends to it; readers (another thread)
    read `chars[:published]`, `finish_reason` and `done`. Characters that might begin a stop
    string are held back (not yet published) until they are known not to."""

    def __init__(self, prime, ids, max_chars, settings, seed, stops, logprobs):
        self.prime, self.ids, self.max_chars = prime, ids, max_chars
        self.temperature, self.top_k, self.top_p = settings
        self.seed, self.stops, self.logprobs = seed, stops, logprobs
        self.rng = np.random.default_rng(seed)
        self.chars = []            # every generated character, stop string included
        self.token_logprobs = []   # per generated character, when logprobs is asked
        self.top_logprobs = []     # per generated character: {char: logprob} of the `logprobs` likeliest
        self.published = 0         # chars[:published] is final text
        self.finish_reason = None  # "stop", "length", "cancelled", or "error" (the scheduler failed)
        self.done = threading.Event()
        self.created = time.perf_counter()
        self.first_char_at = self.finished_at = None
        self.cancelled = False
        self.fed = 0               # prime characters fed so far (the scheduler's)
        self._keep = max((len(s) for s in stops), default=0)
        self._tail = ""
        self._waiter = None

    @property
    def text(self):
        return "".join(self.chars[:self.published])

    def wake_me(self, callback, when_done=False):
        """Call callback() once, from the scheduler thread, at the next character (or only when the
        stream ends, if when_done); replaces the last callback asked for."""
        self._waiter = (callback, when_done)

    def _wake(self, done=False):
        waiter = self._waiter
        if waiter is not None and (done or not waiter[1]):
            self._waiter = None
            waiter[0]()

    def _emit(self, ch, logprob=None, top=None):
        """Append one generated character; return True when the stream has finished."""
        chars = self.chars
        chars.append(ch)
        if self.logprobs is not None:
            self.token_logprobs.append(logprob)
            self.top_logprobs.append(top)
        n = len(chars)
        if self._keep:
            self._tail = tail = (self._tail + ch)[-self._keep:]
            for s in self.stops:
                if tail.endswith(s):  # the stop string ends the text and is not part of it (OpenAI's rule)
                    self._publish(n - len(s))
                    self._finish("stop")
                    return True
            self._publish(n - max((k for s in self.stops for k in range(1, len(s)) if tail.endswith(s[:k])),
                                  default=0))
        elif self.first_char_at is None:
            self._publish(n)
        else:
            self.published = n
        if n >= self.max_chars:
            self._finish("length")
            return True
        waiter = self._waiter
        if waiter is not None and not waiter[1]:
            self._waiter = None
            waiter[0]()
        return False

    def _publish(self, n):
        if n > self.published and self.first_char_at is None:
            self.first_char_at = time.perf_counter()
        self.published = max(self.published, n)

    def _finish(self, reason):
        if reason == "length":
            self._publish(len(self.chars))  # a held-back partial stop string is text after all
        self.finish_reason = reason
        self.finished_at = time.perf_counter()
        self.done.set()
        self._wake(done=True)


class Engine:
    def __init__(self, generator, max_batch=32, max_queue=256, max_chars=4096, on_step=None):
        if max_batch < 1 or max_queue < 0 or max_chars < 0:
            raise EstellaError(f"--max-batch must be >= 1, --max-queue and --max-chars >= 0; got "
                               f"{max_batch}, {max_queue}, {max_chars}")
        self.generator = generator
        self.backend = generator.backend
        self.vocab = generator.vocab
        self.max_batch, self.max_queue, self.max_chars = max_batch, max_queue, max_chars
        self.on_step = on_step  # called with the batch size of every step (metrics)
        # A graph that takes T > 1 characters runs a whole prime in one call, as Generator does.
        self.prime_in_one_call = self.backend.max_time is None or self.backend.max_time > 1
        self._cond = threading.Condition()
        self._waiting = collections.deque()
        self._rows = []  # the running streams, one per row of the batch (scheduler thread only)
        self._state = self.backend.initial_state(0)
        self._logits = np.zeros((0, len(self.vocab)), np.float32)
        self.accepting = True
        self.failed = None  # the exception that stopped the scheduler, if one did
        self._expire = self._closing = self._cancels = False
        self._thread = threading.Thread(target=self._run, name="estella-scheduler", daemon=True)
        self._thread.start()

    @classmethod
    def load(cls, export_dir, backend="auto", precision="float32", threads=None, **options):
        generator = Generator.load(export_dir, backend, precision, **({"num_threads": threads} if threads else {}))
        return cls(generator, **options)

    # --- the caller's side (any thread) ---

    @property
    def running(self):
        return len(self._rows)

    @property
    def waiting(self):
        return len(self._waiting)

    def make_stream(self, prime, max_chars=16, temperature=1.0, top_k=None, top_p=None, seed=None,
                    stop=None, logprobs=None, skip_unknown=False):
        """A checked request (not yet queued); bad settings raise an EstellaError naming the setting.
        The messages are the CLI's (they name its flags); the HTTP layer renames them."""
        check_settings(temperature, top_k, top_p)
        if (isinstance(max_chars, bool) or not isinstance(max_chars, numbers.Integral)
                or not 0 <= max_chars <= self.max_chars):
            raise EstellaError(f"--chars must be an integer from 0 to {self.max_chars} (the server's "
                               f"--max-chars), got {max_chars!r}")
        check_seed(seed)
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, numbers.Integral)
                                     or not 0 <= logprobs <= len(self.vocab)):
            raise EstellaError(f"--logprobs must be an integer from 0 to {len(self.vocab)} (the vocabulary "
                               f"size), got {logprobs!r}")
        stops = stop_list(stop)
        kept, ids = self.generator.encode(prime, skip_unknown)
        return Stream(kept, ids, int(max_chars), (temperature, top_k, top_p), seed, stops, logprobs)

    def add(self, streams):
        """Queue streams as one request: all of them or none (QueueFull, Draining)."""
        with self._cond:
            if self.failed is not None:
                raise EngineFailed(f"the model failed: {self.failed!r}")
            if not self.accepting:
                raise Draining("the server is shutting down and takes no new requests")
            if len(self._rows) + len(self._waiting) + len(streams) > self.max_batch + self.max_queue:
                raise QueueFull(f"the server is full ({self.max_batch} running, {self.max_queue} waiting at most); "
                                "try again later")
            self._waiting.extend(streams)
            self._cond.notify_all()
        return streams

    def submit(self, prime, max_chars=16, **settings):
        return self.add([self.make_stream(prime, max_chars, **settings)])[0]

    def cancel(self, stream):
        """A waiting stream leaves now; a running one at the next tick."""
        stream.cancelled = True
        self._cancels = True  # the scheduler looks for cancelled rows at its next tick
        with self._cond:
            if stream in self._waiting:
                self._waiting.remove(stream)
                stream._finish("cancelled")
            self._cond.notify_all()

    def drain(self, timeout):
        """Take no new requests; let the queued and running ones finish for up to `timeout` seconds,
        then end them with finish_reason "length". Returns once nothing runs."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self.accepting = False
            while (self._rows or self._waiting) and time.monotonic() < deadline:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self._expire = True
            self._cond.notify_all()
            while self._rows or self._waiting:
                self._cond.wait(0.05)

    def shutdown(self, timeout=0.0):
        self.drain(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    # --- the scheduler thread ---

    def _run(self):
        try:
            self._schedule()
        except BaseException as e:  # a failing backend must not leave clients waiting forever
            traceback.print_exc()
            with self._cond:
                self.failed, self.accepting = e, False
                for s in self._rows + list(self._waiting):
                    s._finish("error")
                self._rows, self._waiting = [], collections.deque()
                self._cond.notify_all()

    def _schedule(self):
        while True:
            with self._cond:
                while not (self._rows or self._waiting or self._closing):
                    self._cond.wait()
                if self._closing:
                    return
                if self._expire:
                    self._end_all()
                    continue
                joining = []
                while self._waiting and len(self._rows) + len(joining) < self.max_batch:
                    joining.append(self._waiting.popleft())
            if joining:
                self._join(joining)
            if self._rows:
                self._tick()
            else:
                with self._cond:
                    self._cond.notify_all()  # drain() waits for an empty engine

    def _end_all(self):
        for s in self._rows + list(self._waiting):
            s._finish("length")
        self._waiting.clear()
        self._leave(range(len(self._rows)))
        self._cond.notify_all()

    def _join(self, streams):
        for s in streams:
            if s.max_chars == 0:  # nothing to generate: done before it runs
                s._finish("length")
        streams = [s for s in streams if not s.done.is_set()]
        if not streams:
            return
        states = [self.backend.initial_state(len(streams))]
        logits = np.zeros((len(streams), len(self.vocab)), np.float32)
        if self.prime_in_one_call:
            for i, s in enumerate(streams):
                prime_logits, states[0][i:i + 1] = self.backend.step(s.ids[None, :], states[0][i:i + 1])
                logits[i] = prime_logits[0, -1]
                s.fed = len(s.ids)
        self._rows = self._rows + streams
        self._state = np.concatenate([self._state] + states)
        self._logits = np.concatenate([self._logits, logits])
        self._settings_changed()

    def _leave(self, rows):
        rows = set(rows)
        keep = [i for i in range(len(self._rows)) if i not in rows]
        self._rows = [self._rows[i] for i in keep]
        self._state, self._logits = self._state[keep], self._logits[keep]
        self._settings_changed()

    def _settings_changed(self):
        """The batch's sampler (the runtime's, as generate_many uses it), rebuilt when a stream joins or leaves."""
        rows = self._rows
        self._sampler = BatchSampler([(s.temperature, s.top_k, s.top_p) for s in rows])
        self._row_rngs = [s.rng for s in rows]
        self._logprob_rows = any(s.logprobs is not None for s in rows)
        self._prefilling = sum(s.fed < len(s.ids) for s in rows)

    def _tick(self):
        if self._cancels:
            self._drop_cancelled()
        rows = self._rows
        if not rows:
            return
        # The common case, no prime being fed: every row samples (a few numpy calls, no row loops).
        all_ready = not self._prefilling
        ready = range(len(rows)) if all_ready else [i for i, s in enumerate(rows) if s.fed == len(s.ids)]
        ids = np.zeros((len(rows), 1), np.int32)
        finished = []
        if ready:
            # generate_many's own call (one draw per non-greedy row), on the rows whose prime is fed
            sampled = self._sampler(self._logits, self._row_rngs, None if all_ready else ready)
            ids[ready, 0] = sampled
            logprobs = {}
            if self._logprob_rows:
                asking = [j for j, i in enumerate(ready) if rows[i].logprobs is not None]
                logprobs = dict(zip(asking, self._logprobs([ready[j] for j in asking], sampled[asking])))
            vocab = self.vocab
            for j, (i, c) in enumerate(zip(ready, sampled.tolist())):
                if rows[i]._emit(vocab[c], *logprobs.get(j, ())):
                    finished.append(i)
        if not all_ready:
            for i, s in enumerate(rows):
                if s.fed < len(s.ids):
                    ids[i, 0] = s.ids[s.fed]
                    s.fed += 1
            self._prefilling = sum(s.fed < len(s.ids) for s in rows)
        if finished:
            self._leave(finished)
            gone = set(finished)
            ids, rows = ids[[i for i in range(len(rows)) if i not in gone]], self._rows
            if not rows:
                return
        logits, self._state = self.backend._step(ids, self._state)  # inputs are known good
        self._logits = logits[:, -1]
        if self.on_step is not None:
            self.on_step(len(rows))

    def _drop_cancelled(self):
        self._cancels = False
        cancelled = [i for i, s in enumerate(self._rows) if s.cancelled]
        for i in cancelled:
            self._rows[i]._finish("cancelled")
        if cancelled:
            self._leave(cancelled)

    def _logprobs(self, rows, sampled):
        """Per row: (logprob of the sampled char, {char: logprob} of its k likeliest), at temperature 1."""
        x = self._logits[rows].astype(np.float64)
        x -= x.max(axis=1, keepdims=True)
        x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
        out = []
        for n, (i, c) in enumerate(zip(rows, sampled.tolist())):
            top = np.argsort(-x[n], kind="stable")[:self._rows[i].logprobs]
            out.append((float(x[n, c]), {self.vocab[t]: float(x[n, t]) for t in top.tolist()}))
        return out
