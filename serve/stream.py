"""One request inside the engine (Stream), what it is asked (RequestParams), and what it hands
its reader (Delta, Completion).

The scheduler thread owns a Stream's state; a reader (the HTTP layer, another thread) gets
immutable deltas through the stream's own queue (take, result) and reads nothing else but its
prime and params, which are set before the stream is queued and never change.
"""

import collections
import dataclasses
import threading
import typing

import numpy as np

from estella.runtime.sampling import SamplingParams
from estella.runtime.stops import StopMatcher


@dataclasses.dataclass(frozen=True)
class RequestParams:
    """How one stream is generated, checked against the model once (Engine.request_params)."""
    sampling: SamplingParams = SamplingParams()
    max_chars: int = 16
    seed: int | None = None
    stops: tuple = ()
    logprobs: int | None = None  # k: per character its logprob and the k likeliest


class Delta(typing.NamedTuple):
    """What a stream hands its reader: new final text, and on the last delta, why it ended."""
    text: str
    logprobs: tuple | None        # per character of text: (char, logprob, ((char, logprob), ...) k likeliest)
    finish_reason: str | None     # "stop", "length", "cancelled" or "error" on the last delta
    error: str | None = None      # what went wrong, with finish_reason "error"


class Completion(typing.NamedTuple):
    text: str
    finish_reason: str
    logprobs: tuple | None
    error: str | None


class Stream:
    """One request inside the engine. The scheduler thread owns its state; a reader calls take()
    (or result()) and on_delta(), and reads only prime and params (immutable, set when made)."""

    def __init__(self, prime, ids, params):
        self.prime, self.ids, self.params = prime, ids, params
        self.done = threading.Event()  # set with the last delta
        self.key = None  # its name in an engine process (EngineProcess)
        # Appended by the scheduler, taken by the reader: a str (new text, the common case: no
        # object made per character) or a Delta (text with logprobs, or the end).
        self._queue = collections.deque()
        self._waiter = None
        self._read = []  # the reader's own: what result() has taken
        # the scheduler's own (start() makes the rest when the stream is queued)
        self.fed = 0        # prime characters fed so far
        self.generated = 0  # characters generated so far
        self._unsent = ""   # generated characters not yet final (they might begin a stop string)
        self._unsent_logprobs = []
        self.rng = None     # made by start()

    def start(self):
        """What only a running stream needs, made when it is queued (Engine.add, on the caller's thread),
        so that the HTTP side of an engine process never makes them and the scheduler's time is the batch's."""
        params = self.params
        self.rng = np.random.default_rng(params.seed)
        self.matcher = StopMatcher(params.stops, keep=False)
        # No stop strings, no logprobs: every character is final text at once, and the engine hands
        # them out in bulk (Engine.flush) rather than through _emit.
        self.plain = not params.stops and params.logprobs is None

    # --- the reader's side (any one thread) ---

    def take(self):
        """Everything that has come since the last take, as one Delta; None if nothing has."""
        queue = self._queue
        if not queue:
            return None
        items = []
        while queue:
            items.append(queue.popleft())
        last = items[-1]
        if isinstance(last, str) and len(items) == 1:
            return Delta(last, None, None)
        text = "".join(x if isinstance(x, str) else x.text for x in items)
        logprobs = None
        if self.params.logprobs is not None:
            logprobs = tuple(e for x in items if not isinstance(x, str) for e in x.logprobs or ())
        if isinstance(last, str):
            return Delta(text, logprobs, None)
        return Delta(text, logprobs, last.finish_reason, last.error)

    def has_news(self):
        """Whether take() would return something now."""
        return bool(self._queue)

    def on_delta(self, callback, final_only=False):
        """Call callback() once, from the scheduler thread, at the next delta (or only at the last
        one, if final_only); replaces the callback asked for before. Ask, then take(): a delta
        that came in between is taken, and the callback may still come (harmless)."""
        self._waiter = (callback, final_only)

    def result(self, timeout=None):
        """Wait for the end and return the whole Completion (for callers that do not stream; what
        take() handed out before is not in it)."""
        if not self.done.wait(timeout):
            raise TimeoutError("the stream did not finish in time")
        delta = self.take()
        if delta is not None:
            self._read.append(delta)
        deltas = self._read
        logprobs = None if self.params.logprobs is None else tuple(e for d in deltas for e in d.logprobs or ())
        return Completion("".join(d.text for d in deltas), deltas[-1].finish_reason, logprobs, deltas[-1].error)

    # --- the scheduler's side ---

    def _emit(self, ch, logprob=None):
        """One generated character of a stream that is not plain (it has stop strings or logprobs), and
        its logprob entry when asked; True once the stream has finished."""
        self.generated += 1
        matcher = self.matcher
        stopped = matcher.push(ch)
        with_logprobs = self.params.logprobs is not None
        if not self._unsent and matcher.final == matcher.length:  # final text at once
            self._send(ch, (logprob,) if with_logprobs else None)
        else:  # some characters are held back: they might begin a stop string
            pending = self._unsent + ch
            entries = self._unsent_logprobs + [logprob] if with_logprobs else []
            ready = matcher.final - (matcher.length - len(pending))
            if ready > 0:
                self._send(pending[:ready], tuple(entries[:ready]) if with_logprobs else None)
                pending, entries = pending[ready:], entries[ready:]
            self._unsent, self._unsent_logprobs = pending, entries
        if stopped:  # the stop string ends the text and is not part of it (OpenAI's rule)
            self._finish("stop")
            return True
        if self.generated >= self.params.max_chars:
            self._finish("length")
            return True
        return False

    def _send(self, text, logprobs):
        self._deliver(Delta(text, logprobs, None) if logprobs is not None else text)

    def _finish(self, reason, error=None):
        """The last delta. On "length", a held-back tail that never became a stop string is text
        after all; on a stop it was the stop string; on "cancelled" or "error" nobody wants it."""
        if self.done.is_set():
            return
        tail, entries = (self._unsent, tuple(self._unsent_logprobs)) if reason == "length" else ("", ())
        self._unsent, self._unsent_logprobs = "", []
        self._deliver(Delta(tail, entries if self.params.logprobs is not None else None, reason, error))

    def _deliver(self, item):
        """Hand the reader one item: new text (a str), or a Delta (with logprobs, or the last one).
        The one way items reach the reader, whether made here or received from an engine process."""
        self._queue.append(item)
        last = not isinstance(item, str) and item.finish_reason is not None
        if last:
            self.done.set()
        waiter = self._waiter
        if waiter is not None and (last or not waiter[1]):
            self._waiter = None
            waiter[0]()
