"""The serving engine, without HTTP: one scheduler thread owns the backend and steps every running
stream in one batched call per tick (continuous batching).

    engine = Engine.load("runs/default/export", backend="tflite", max_batch=32)
    stream = engine.submit("Pip", 200, temperature=0.5, seed=1)
    print(stream.result(timeout=30).text)
    engine.shutdown()

A stream's whole context is its state row, so a stream joins or leaves the batch at any tick: its
row is added to or cut from the [B, S] state. Each tick:
  1. samples every stream whose logits are ready in ONE call of the runtime's sampler
     (BatchSampler), each stream drawing one uniform per character from its own
     np.random.default_rng(seed), exactly as Generator does: a seeded stream writes the text
     `estella generate` writes with the same seed, whatever runs beside it;
  2. hands each stream its character; a finished stream leaves at once and frees its slot;
     a plain stream (no stop strings, no logprobs) has its characters kept as the tick's id array
     and is handed them as one string at the next flush (every tick, or when on_news flushes);
  3. steps all remaining streams in one backend call, and feeds the next chunk of the primes
     still being read.

The scheduler thread owns every Stream's fields. A reader (the HTTP layer, on another thread) gets
immutable Deltas through the stream's own queue (Stream.take, Stream.result) and never reads them.

Primes are fed in bounded work per tick, so a long prime never stalls the others for more than a
tick's bounded work: on a graph made for T = 1 (tflite), one character per tick as that stream's
input in the shared batched step; on a graph that takes T > 1 (numpy, onnx), a chunk of at most
prefill_chunk characters per stream, and at most prefill_budget characters in all, per tick, in one
extra call per chunk length. The math is the same as Generator's (the state carries across
chunks), so the text is too.

Isolation. An error in one stream's own work (its sampler, its characters, its logprobs, its
prime) ends that stream alone with finish_reason "error"; the others go on. A batched step that
fails is retried row by row, and only the rows that fail alone end. If every row fails (the
backend itself is broken) or the scheduler's own code fails, the engine is FAILED: every stream
ends with "error", nothing new is taken, and on_fatal(error) is called (the server then exits non-zero
so that a supervisor restarts it, rather than live on answering errors).

Logprobs are of the model's own distribution (temperature 1, before top-k/top-p), as vLLM reports
by default: they say what the model thinks, not what the sampling settings cut.
"""

import collections
import enum
import sys
import threading
import traceback

import numpy as np

from estella.runtime.errors import EstellaError
from estella.runtime.generator import Generator, encode_prime
from estella.runtime.sampling import BatchSampler, SamplingParams, check_integer, check_seed
from estella.runtime.stops import check_stops

from .stream import Completion, Delta, RequestParams, Stream  # noqa: F401 - the engine's public types

LENGTH = "length"  # why a row is gone: it drew its last character (plain rows, counted here)
NOT_COUNTED = np.iinfo(np.int64).max  # chars left of a row that counts its own (stops, logprobs)
PREFILL_CHUNK = 256    # prime characters per stream per tick, where the graph takes T > 1
PREFILL_BUDGET = 1024  # prime characters per tick in all


class QueueFull(EstellaError):
    """Every batch slot and every queue place is taken: try again later."""


class Draining(EstellaError):
    """The engine is shutting down and takes no new requests."""


class EngineFailed(RuntimeError):
    """The scheduler cannot go on (printed with its traceback on the server's stderr). Not bad input:
    the process should exit and be restarted."""


class Life(enum.Enum):
    """The engine's life cycle, one state: SERVING -> DRAINING -> ENDING -> CLOSED, or FAILED."""
    SERVING = "serving"    # takes requests
    DRAINING = "draining"  # takes none; the queued and running ones go on
    ENDING = "ending"      # every stream is ended now (the drain's time is up, or a second signal)
    CLOSED = "closed"      # the scheduler has stopped
    FAILED = "failed"      # the scheduler stopped on an error it cannot serve past


class Intake:
    """The caller's side shared by Engine and EngineProcess: requests checked against the model (its
    vocab, char_to_id) and the server's max_chars, made into Streams, and queued (the subclass's add)."""

    @property
    def accepting(self):
        return self.life is Life.SERVING

    def request_params(self, max_chars=16, temperature=1.0, top_k=None, top_p=None, seed=None, stop=None,
                       logprobs=None, streams=1):
        """One checked RequestParams (for `streams` streams: their seeds run seed .. seed + streams - 1).
        A bad value raises a SettingError naming its field (max_chars, temperature, top_k, top_p,
        seed, stop, logprobs); each interface words it."""
        sampling = SamplingParams(temperature, top_k, top_p)
        max_chars = check_integer("max_chars", max_chars, 0, self.max_chars,
                                  what=f"must be an integer from 0 to {self.max_chars} (the server's --max-chars)")
        check_seed(seed, streams)
        stops = tuple(check_stops(stop))
        if logprobs is not None:
            logprobs = check_integer("logprobs", logprobs, 0, len(self.vocab),
                                     what=f"must be an integer from 0 to {len(self.vocab)} (the vocabulary size)")
        return RequestParams(sampling, max_chars, seed, stops, logprobs)

    def make_stream(self, prime, params, skip_unknown=False):
        """A stream (not yet queued) for a checked RequestParams; a prime outside the vocabulary
        raises PrimeError (field "prime")."""
        return self.make_streams(prime, [params], skip_unknown)[0]

    def make_streams(self, prime, params, skip_unknown=False):
        """One stream per RequestParams, all on the same prime (encoded once)."""
        kept, ids = encode_prime(self.char_to_id, prime, skip_unknown)
        return [Stream(kept, ids, p) for p in params]

    def submit(self, prime, max_chars=16, skip_unknown=False, **settings):
        """make_stream and add in one: settings are request_params' (temperature, top_k, ...)."""
        return self.add([self.make_stream(prime, self.request_params(max_chars, **settings), skip_unknown)])[0]

    def _admit(self, held, coming):
        """Raise why `coming` more streams cannot be taken beside the `held` ones (the caller holds its lock)."""
        if self.life is Life.FAILED:
            raise EngineFailed(f"the model failed: {self.failure!r}")
        if self.life is not Life.SERVING:
            raise Draining("the server is shutting down and takes no new requests")
        if held + coming > self.max_batch + self.max_queue:
            raise QueueFull(f"the server is full ({self.max_batch} running, {self.max_queue} waiting at most); "
                            "try again later")


class Engine(Intake):
    def __init__(self, generator, max_batch=32, max_queue=256, max_chars=4096, on_step=None, on_fatal=None,
                 on_news=None, intake=None, prefill_chunk=PREFILL_CHUNK, prefill_budget=PREFILL_BUDGET):
        if max_batch < 1 or max_queue < 0 or max_chars < 0 or prefill_chunk < 1 or prefill_budget < 1:
            raise EstellaError(f"--max-batch must be >= 1, --max-queue and --max-chars >= 0, the prefill chunk and "
                               f"budget >= 1; got {max_batch}, {max_queue}, {max_chars}, {prefill_chunk}, "
                               f"{prefill_budget}")
        self.generator = generator
        self.backend = generator.backend
        self.vocab, self.char_to_id = generator.vocab, generator.char_to_id
        self.max_batch, self.max_queue, self.max_chars = max_batch, max_queue, max_chars
        self.on_step = on_step    # called with the batch size of every step (metrics)
        self.on_fatal = on_fatal  # called with the error once the scheduler cannot go on
        # on_news(idle) after each pass of the scheduler's loop, on its thread; it may call flush(). Without
        # one, the engine flushes after every tick.
        self.on_news = on_news
        # intake(idle) at the top of each pass, on the scheduler's thread: it may add and cancel streams
        # (an engine process's commands), and wait a little for them while idle. With one, the scheduler
        # never waits on its condition: what changes the engine comes through the intake, or is seen
        # at its next return.
        self.intake = intake
        # A graph made for T = 1 is fed primes inside the batched step; one that takes more, in chunks.
        self.chunked_prime = self.backend.max_time is None or self.backend.max_time > 1
        self.prefill_chunk = min(prefill_chunk, self.backend.max_time or prefill_chunk)
        self.prefill_budget = max(prefill_budget, self.prefill_chunk)
        self.life = Life.SERVING
        self.failure = None  # the error that stopped the scheduler, once FAILED
        self.running = self.waiting = 0  # counts, for metrics (written by the scheduler and add)
        self._cond = threading.Condition()
        self._waiting = collections.deque()
        self._cancelled = set()
        self._rows = []  # the running streams, one per row of the batch (scheduler thread only)
        self._drawn = []  # per tick since the last flush: the ids drawn [B], -1 where a row drew none
        self._lookup = self.vocab + [""]  # id -> its character, and -1 (nothing drawn) -> ""
        self._state = self.backend.initial_state(0)
        self._logits = np.zeros((0, len(self.vocab)), np.float32)
        self._sampler = BatchSampler([])
        self._thread = threading.Thread(target=self._run, name="estella-scheduler", daemon=True)
        self._thread.start()

    @classmethod
    def load(cls, export_dir, backend="auto", precision="float32", threads=None, **options):
        generator = Generator.load(export_dir, backend, precision, **({"num_threads": threads} if threads else {}))
        return cls(generator, **options)

    # --- the caller's side (any thread) ---

    def add(self, streams):
        """Queue streams as one request: all of them or none (QueueFull, Draining, EngineFailed)."""
        for s in streams:
            s.start()  # on the caller's thread: the scheduler's time is the batch's
        with self._cond:
            self._admit(self.running + len(self._waiting), len(streams))
            self._waiting.extend(streams)
            self.waiting = len(self._waiting)
            self._cond.notify_all()
        return streams

    def cancel(self, stream):
        """A waiting stream leaves now; a running one at the next tick."""
        with self._cond:
            if stream in self._waiting:
                self._waiting.remove(stream)
                self.waiting = len(self._waiting)
                stream._finish("cancelled")
            elif not stream.done.is_set():
                self._cancelled.add(stream)
            self._cond.notify_all()

    def drain(self, timeout):
        """Take no new requests; let the queued and running ones finish for up to `timeout` seconds,
        then end them with finish_reason "length". Returns once nothing runs."""
        with self._cond:
            if self.life is Life.SERVING:
                self.life = Life.DRAINING
            self._cond.wait_for(lambda: self._idle() or self.life is not Life.DRAINING, timeout)
        self.end_now()

    def end_now(self):
        """End every stream now (finish_reason "length"), take nothing new; returns once nothing runs."""
        with self._cond:
            if self.life in (Life.SERVING, Life.DRAINING):
                self.life = Life.ENDING
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._idle() or self.life in (Life.FAILED, Life.CLOSED))

    def shutdown(self, timeout=0.0):
        self.drain(timeout)
        with self._cond:
            if self.life is not Life.FAILED:
                self.life = Life.CLOSED
            self._cond.notify_all()
        self._thread.join()

    def _idle(self):
        return not self._rows and not self._waiting

    # --- the scheduler thread ---

    def _run(self):
        try:
            self._schedule()
        except BaseException as e:  # noqa: BLE001 - the scheduler cannot go on: fail everything, loudly
            traceback.print_exc()
            self._fail(e)
        finally:
            self._news()

    def _news(self):
        if self.on_news is None:
            self.flush()
        else:
            self.on_news(self.life is not Life.SERVING or not (self._rows or self._waiting))

    def flush(self):
        """Hand each plain stream the characters it drew since the last flush, as one string
        (scheduler thread only: on_news may call it)."""
        if not self._drawn:
            return
        drawn, self._drawn = self._drawn, []
        lookup, rows, plain = self._lookup, self._rows, self._plain_rows
        if len(drawn) == 1:  # one tick (as when the engine flushes every tick): one character, or none
            ids = drawn[0].tolist()
            texts = [lookup[ids[i]] for i in plain]
        else:
            ids = np.stack(drawn, axis=1).tolist()  # [B][ticks]
            texts = ["".join(map(lookup.__getitem__, ids[i])) for i in plain]
        for i, text in zip(plain, texts):
            if text:
                s = rows[i]
                s.generated += len(text)
                s._deliver(text)

    def _fail(self, error):
        with self._cond:
            self.life, self.failure = Life.FAILED, error
            for s in self._rows + list(self._waiting):
                s._finish("error", f"the model failed: {error!r}")
            self._rows, self._waiting, self._drawn = [], collections.deque(), []  # what was drawn goes with them
            self.running = self.waiting = 0
            self._cond.notify_all()
        if self.on_fatal is not None:
            self.on_fatal(error)

    def _schedule(self):
        while True:
            self._news()  # what the last pass handed the streams
            if self.intake is not None:
                self.intake(self._idle())
            with self._cond:
                if self.intake is None:
                    self._cond.wait_for(lambda: self._rows or self._waiting or self.life is Life.CLOSED)
                elif self._idle() and self.life in (Life.SERVING, Life.DRAINING):
                    continue  # nothing to do: the intake waits for it
                if self.life is Life.CLOSED and self._idle():
                    return
                if self.life in (Life.ENDING, Life.CLOSED):
                    self._end_all()
                    continue
                joining = []
                while self._waiting and len(self._rows) + len(joining) < self.max_batch:
                    joining.append(self._waiting.popleft())
                self.waiting = len(self._waiting)
                cancelled, self._cancelled = self._cancelled, set()
            if joining:
                self._join(joining)
            if cancelled:
                self._drop([i for i, s in enumerate(self._rows) if s in cancelled], "cancelled")
            if self._rows:
                self._tick()
            else:
                with self._cond:
                    self._cond.notify_all()  # drain() waits for an empty engine

    def _end_all(self):
        for s in list(self._waiting):
            s._finish("length")
        self._waiting.clear()
        self.waiting = 0
        self._drop(range(len(self._rows)), "length")
        self._cond.notify_all()

    def _join(self, streams):
        joining, samplers = [], [self._sampler]
        for s in streams:
            if s.params.max_chars == 0:  # nothing to generate: done before it runs
                s._finish("length")
                continue
            try:
                samplers.append(BatchSampler([s.params.sampling]))  # alone: a bad one ends this stream only
                joining.append(s)
            except Exception as e:  # noqa: BLE001
                self._stream_failed(s, e)
        if not joining:
            return
        self.flush()  # the rows change: what was drawn is handed out first
        self._sampler = BatchSampler.concat(samplers)
        self._rows = self._rows + joining
        self._state = np.concatenate([self._state, self.backend.initial_state(len(joining))])
        self._logits = np.concatenate([self._logits, np.zeros((len(joining), len(self.vocab)), np.float32)])
        self._rows_changed()

    def _drop(self, rows, reason):
        """End these rows' streams with `reason` and cut them from the batch."""
        self.flush()
        for i in rows:
            self._rows[i]._finish(reason)
        self._cut(rows)

    def _cut(self, rows):
        rows = set(rows)
        if not rows:
            return
        keep = [i for i in range(len(self._rows)) if i not in rows]
        self._rows = [self._rows[i] for i in keep]
        self._state, self._logits, self._sampler = self._state[keep], self._logits[keep], self._sampler.take(keep)
        self._rows_changed()

    def _stream_failed(self, stream, error):
        """One stream's own work failed: it ends alone, with the error (on stderr too)."""
        print(f"estella serve: a request failed and was ended alone: {error!r}", file=sys.stderr, flush=True)
        stream._finish("error", f"this request failed: {error!r}")

    def _rows_changed(self):
        """What the tick reads of the rows, once a stream has joined or left (the rows' sampler, the
        runtime's as generate_many uses it, is joined and cut with them)."""
        rows = self._rows
        self.running = len(rows)
        self._row_rngs = [s.rng for s in rows]
        self._logprob_rows = any(s.params.logprobs is not None for s in rows)
        self._prefilling = sum(s.fed < len(s.ids) for s in rows)
        # Plain rows count their characters here (flush hands them out); the others one by one (Stream._emit).
        self._plain_rows = [i for i, s in enumerate(rows) if s.plain]
        self._one_by_one = [i for i, s in enumerate(rows) if not s.plain]
        self._left = np.array([s.params.max_chars - s.generated if s.plain else NOT_COUNTED for s in rows], np.int64)
        self._unstarted = any(s.generated == 0 for s in rows)  # a first character is due: flush it at once

    def _tick(self):
        rows = self._rows
        # The common case, no prime being fed: every row samples (a few numpy calls, no row loops).
        all_ready = not self._prefilling
        ready = range(len(rows)) if all_ready else [i for i, s in enumerate(rows) if s.fed == len(s.ids)]
        ids = np.zeros((len(rows), 1), np.int32)
        self._gone = {}  # row -> None (finished), LENGTH (to finish) or the error that ends it alone
        if ready:
            self._sample_and_emit(rows, ready, all_ready, ids)
        if self._gone:
            gone = self._gone
            keep = [i for i in range(len(rows)) if i not in gone]
            self._end_gone()
            rows, ids = self._rows, ids[keep]
            if not rows:
                return
        if not self._prefilling:
            self._step_rows(range(len(rows)), ids)
        elif not self.chunked_prime:  # a graph for one character: primes are fed inside the batch
            for i, s in enumerate(rows):
                if s.fed < len(s.ids):
                    ids[i, 0] = s.ids[s.fed]
                    s.fed += 1
            self._step_rows(range(len(rows)), ids)
        else:
            decoding = [i for i, s in enumerate(rows) if s.fed == len(s.ids)]
            if decoding:
                self._step_rows(decoding, ids[decoding])
            self._feed_chunks([i for i, s in enumerate(rows) if s.fed < len(s.ids)])
        self._prefilling = sum(s.fed < len(s.ids) for s in rows) if self._prefilling else 0
        if self._gone:
            self._end_gone()
        if self.on_step is not None:
            self.on_step(len(rows))

    def _end_gone(self):
        """Cut the rows that finished or failed this tick: a plain one that has drawn its last character
        ends with "length" (after its text), a failed one with its error."""
        self.flush()
        for i, why in self._gone.items():
            if why is LENGTH:
                self._rows[i]._finish("length")
            elif why is not None:
                self._stream_failed(self._rows[i], why)
        gone, self._gone = self._gone, {}
        self._cut(gone)

    def _sample_and_emit(self, rows, ready, all_ready, ids):
        try:  # generate_many's own call (one draw per non-greedy row), on the rows whose prime is fed
            sampled = self._sampler(self._logits, self._row_rngs, None if all_ready else ready)
        except Exception:  # noqa: BLE001 - find the rows that fail alone
            sampled = np.array([self._redraw(i) for i in ready], np.int64)
        if all_ready:
            drawn = sampled
            ids[:, 0] = sampled
        else:
            drawn = np.full(len(rows), -1, np.int64)
            drawn[ready] = ids[ready, 0] = sampled
        gone = self._gone
        if self._plain_rows:  # kept for flush; the rows that drew their last character end
            self._drawn.append(drawn)
            left = self._left
            if all_ready:
                left -= 1
            else:
                left[ready] -= 1
            if not left.all():
                for i in np.flatnonzero(left == 0).tolist():
                    gone.setdefault(i, LENGTH)
        if self._one_by_one:
            self._emit_one_by_one(rows, drawn.tolist())
        if self._unstarted:  # a stream's first character goes out at once
            self.flush()
            self._unstarted = any(s.generated == 0 for s in rows)

    def _emit_one_by_one(self, rows, drawn):
        """The rows with stop strings or logprobs: each character through its stream's own matcher."""
        gone, vocab = self._gone, self.vocab
        rows_drawn = [i for i in self._one_by_one if drawn[i] >= 0 and i not in gone]
        asked = [i for i in rows_drawn if rows[i].params.logprobs is not None] if self._logprob_rows else []
        logprobs = dict(zip(asked, self._log_softmax(asked))) if asked else {}
        for i in rows_drawn:
            s, c = rows[i], drawn[i]
            try:
                entry = self._entry(logprobs[i], c, s) if i in logprobs else None
                if s._emit(vocab[c], entry):
                    gone[i] = None
            except Exception as e:  # noqa: BLE001 - this stream's own work: it ends alone
                gone[i] = e

    def _redraw(self, i):
        """Row i's draw alone (the uniform it drew in the failed batched call), or -1 if it fails alone."""
        try:
            return self._sampler.redraw(self._logits, i)
        except Exception as e:  # noqa: BLE001
            self._gone[i] = e
            return -1

    def _log_softmax(self, rows):
        x = self._logits[rows].astype(np.float64)
        x -= x.max(axis=1, keepdims=True)
        x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
        return x

    def _entry(self, row, c, stream):
        """(char, logprob of the sampled char, ((char, logprob), ...) of its k likeliest), at temperature 1."""
        top = np.argsort(-row, kind="stable")[:stream.params.logprobs]
        vocab = self.vocab
        return vocab[c], float(row[c]), tuple((vocab[t], float(row[t])) for t in top.tolist())

    def _step_rows(self, rows, ids):
        """Step these rows (a range of all of them, or a list) on ids [len(rows), T]; their state and
        last logits are updated. A failing batched step is retried row by row: the rows that fail
        alone end; if every row fails, the backend is broken and the error is raised (fatal)."""
        every = isinstance(rows, range)
        state = self._state if every else self._state[rows]
        try:
            logits, new_state = self.backend.step_trusted(ids, state)
        except Exception as error:  # noqa: BLE001
            self._step_alone(list(rows), ids, state, error)
            return
        if every:
            self._state, self._logits = new_state, logits[:, -1]
        else:
            self._state[rows], self._logits[rows] = new_state, logits[:, -1]

    def _step_alone(self, rows, ids, state, error):
        failed = {}
        for j, i in enumerate(rows):
            if len(rows) == 1:
                failed[i] = error
                break
            try:
                logits, new_state = self.backend.step_trusted(np.ascontiguousarray(ids[j:j + 1]), state[j:j + 1])
                self._state[i], self._logits[i] = new_state[0], logits[0, -1]
            except Exception as e:  # noqa: BLE001
                failed[i] = e
        if len(failed) == len(rows) and len(failed) == len(self._rows):
            raise EngineFailed(f"every stream's step failed: {error!r}") from error
        self._gone.update(failed)

    def _feed_chunks(self, rows):
        """The next chunk of each prime being read, within the tick's budget (join order first): one
        step per chunk length."""
        budget, groups = self.prefill_budget, {}
        for i in rows:
            s = self._rows[i]
            n = min(self.prefill_chunk, len(s.ids) - s.fed, budget)
            if n <= 0:
                break
            budget -= n
            groups.setdefault(n, []).append(i)
        for n, group in groups.items():
            streams = [self._rows[i] for i in group]
            self._step_rows(group, np.stack([s.ids[s.fed:s.fed + n] for s in streams]))
            for s in streams:
                s.fed += n
