"""The engine in a process of its own, so that the model's scheduler and the HTTP side do not take
turns on one interpreter lock:

    engine = EngineProcess("runs/default/export", backend="tflite", precision="int8", max_batch=32)
    stream = engine.submit("Pip", 200, temperature=0.5, seed=1)   # the caller's side of Engine
    print(stream.result(timeout=30).text)
    engine.shutdown()

The child runs an Engine whose scheduler reads the commands itself, between two ticks (Child.intake):
the child runs one thread, so no other thread of it takes the interpreter lock, or the scheduler's
core, while it waits for it. This side keeps each request's Stream (the reader's end) and is sent what
the child's streams were handed, many streams' items in one message (when: Child). Two one-way pipes
(multiprocessing Connections: pickled tuples):

  to the child:  ("add", [(key, prime, params), ...])   ("cancel", key)
                 ("call", seq, name, args): drain, end_now, shutdown; answered ("done", seq)
  from it:       ("ready", vocab, backend_info) or ("load_error", message), once, first
                 ("news", [(key, [item, ...]), ...], running, waiting, batch_sizes)
                 ("failed", message): its scheduler cannot go on    ("done", seq)

Admission (QueueFull, Draining, EngineFailed) is decided here at add, with no round trip: this side
counts a stream until its last item has come back, never fewer than the child holds, so the child
never refuses what was taken here. If the child dies, every open stream ends with "error" and
on_fatal is called, as when a scheduler fails. The child ignores SIGINT and SIGTERM (a Ctrl-C or a
supervisor signals the whole group): the server drains it, and it exits when told or when this side's
pipe closes.
"""

import collections
import dataclasses
import itertools
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection

from estella.runtime.errors import EstellaError
from estella.runtime.generator import encode_prime

from .engine import Draining, Engine, EngineFailed, Intake, Life, QueueFull
from .stream import Stream

NEWS_INTERVAL = 0.005  # s: the child sends a running stream's text at least this often
IDLE_WAIT = 0.02       # s: an idle engine process's scheduler waits at most this long for a command


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """What the HTTP side tells of the child's backend (GET /v1/models, the startup line)."""
    name: str
    precision: str
    state_size: int


class EngineProcess(Intake):
    def __init__(self, export_dir, backend="auto", precision="float32", threads=None, max_batch=32, max_queue=256,
                 max_chars=4096, on_step=None, on_fatal=None, loop=None, cpus=None):
        """Starts the child and returns once its model is loaded; a model that cannot load raises its
        error here (an EstellaError) and the child is gone. The child's news is read by a thread of
        its own, or, given an asyncio loop (the HTTP side's), by that loop: the streams' readers are
        then woken on their own thread, with no interpreter lock handed between threads. cpus: a set of
        CPU ids the child runs on (Linux), or None for wherever the OS puts it."""
        self.max_batch, self.max_queue, self.max_chars = max_batch, max_queue, max_chars
        self.on_step, self.on_fatal = on_step, on_fatal
        self.life, self.failure = Life.SERVING, None
        self.running = self.waiting = 0  # the child's counts, as of its last news
        self._lock = threading.Lock()   # life, admission, and sending to the child
        self._open = {}                 # key -> Stream, until its last item has come back
        self._keys = itertools.count()
        self._calls = {}                # seq -> Event set when the child answers
        self._gone = False              # the child has exited (asked to, or not)
        # A fresh interpreter (this process has threads: never fork it), started as a module so that
        # the caller's own main module is not imported again there (as multiprocessing's spawn would).
        commands, commands_w = os.pipe()
        news_r, news = os.pipe()
        how = {"export_dir": str(export_dir), "backend": backend, "precision": precision, "threads": threads,
               "max_batch": max_batch, "max_queue": max_queue, "max_chars": max_chars,
               "cpus": sorted(cpus) if cpus else None}
        self._process = subprocess.Popen([sys.executable, "-m", __name__, str(commands), str(news), json.dumps(how)],
                                         pass_fds=(commands, news))
        os.close(commands)
        os.close(news)
        self._commands, self._news = Connection(commands_w, readable=False), Connection(news_r, writable=False)
        try:
            first = self._news.recv()
        except EOFError:
            raise EngineFailed(f"the engine process exited with code {self._process.wait()} while loading") from None
        if first[0] == "load_error":
            self._process.wait()
            raise EstellaError(first[1])
        _, vocab, backend_info = first
        self.vocab, self.char_to_id = vocab, {c: i for i, c in enumerate(vocab)}
        self.backend = BackendInfo(**backend_info)
        self._loop, self._receiver = loop, None
        if loop is None:
            self._read_on_a_thread()
        else:
            loop.call_soon_threadsafe(self._read_on, loop)

    @property
    def pid(self):
        """The engine process's id."""
        return self._process.pid

    # --- the caller's side (any thread) ---

    def add(self, streams):
        """Queue streams as one request: all of them or none (QueueFull, Draining, EngineFailed)."""
        with self._lock:
            self._admit(len(self._open), len(streams))
            sent = []
            for s in streams:
                s.key = next(self._keys)
                self._open[s.key] = s
                sent.append((s.key, s.prime, s.params))  # the child encodes the prime itself: no array to send
            self._send(("add", sent))
        return streams

    def cancel(self, stream):
        """A waiting stream leaves at once; a running one at the child's next tick."""
        with self._lock:
            if stream.key in self._open and self.life is not Life.FAILED:
                self._send(("cancel", stream.key))

    def drain(self, timeout):
        """Take no new requests; let the queued and running ones finish for up to `timeout` seconds,
        then end them with finish_reason "length". Returns once nothing runs."""
        with self._lock:
            if self.life is Life.SERVING:
                self.life = Life.DRAINING
        self._call("drain", timeout)
        self._ending()

    def end_now(self):
        """End every stream now (finish_reason "length"), take nothing new; returns once nothing runs."""
        self._ending()
        self._call("end_now")

    def shutdown(self, timeout=0.0):
        self._read_on_a_thread()  # the loop that read the news may be gone: the answers are read here
        self.drain(timeout)
        with self._lock:
            if self.life is not Life.FAILED:
                self.life = Life.CLOSED  # from here the child's exit is expected
        self._call("shutdown")
        self._process.wait()
        if self._receiver is not None:
            self._receiver.join()
        self._commands.close()

    def _ending(self):
        with self._lock:
            if self.life in (Life.SERVING, Life.DRAINING):
                self.life = Life.ENDING

    def _call(self, name, *args):
        """Run engine.name(*args) in the child and wait for it to return (at once if the child is gone)."""
        done = threading.Event()
        with self._lock:
            if self._gone:
                return
            seq = next(self._keys)
            self._calls[seq] = done
            self._send(("call", seq, name, args))
        done.wait()

    def _send(self, message):  # (holding self._lock)
        self._commands.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    # --- the child's news, handed to each stream's reader (a thread's, or the loop's) ---

    def _read_on(self, loop):
        """Read the child's news on this loop (called on it)."""
        fd = self._news.fileno()
        loop.add_reader(fd, self._read_ready, loop)
        # The loop made the pipe non-blocking; a message is read whole once its first byte has come
        # (the child writes it at once), and a read that found half a message must wait, not fail.
        os.set_blocking(fd, True)

    def _read_on_a_thread(self):
        """Read the child's news on a thread of this object's own (from now on, if a loop read it)."""
        loop, self._loop = self._loop, None
        if loop is not None and not loop.is_closed():
            removed = threading.Event()

            def remove():
                loop.remove_reader(self._news.fileno())
                removed.set()

            try:
                loop.call_soon_threadsafe(remove)
            except RuntimeError:  # closed meanwhile
                pass
            while not removed.wait(0.05) and loop.is_running():
                pass
        if self._receiver is None and not self._gone:
            self._receiver = threading.Thread(target=self._receive, name="estella-engine-news", daemon=True)
            self._receiver.start()

    def _receive(self):
        while True:
            try:
                message = pickle.loads(self._news.recv_bytes())
            except (EOFError, OSError):
                self._child_gone()
                return
            self._handle(message)

    def _read_ready(self, loop):
        """The loop's reader: every message that has come."""
        try:
            while True:
                self._handle(pickle.loads(self._news.recv_bytes()))
                if not self._news.poll():
                    return
        except (EOFError, OSError):
            loop.remove_reader(self._news.fileno())
            self._child_gone()

    def _handle(self, message):
        kind = message[0]
        if kind == "news":
            _, items, self.running, self.waiting, batch_sizes = message
            open_streams = self._open
            for key, stream_items in items:
                stream = open_streams.get(key)
                if stream is None:  # ended here already (the child failed)
                    continue
                for item in stream_items:
                    stream._deliver(item)
                if stream.done.is_set():
                    del open_streams[key]
            on_step = self.on_step  # (set by the HTTP side once the engine is up)
            if on_step is not None:
                for n in batch_sizes:
                    on_step(n)
        elif kind == "done":
            self._calls.pop(message[1]).set()
        elif kind == "failed":  # the child's streams have had their error already
            self._failed(message[1])

    def _child_gone(self):
        with self._lock:
            if self._gone:
                return
            self._gone = True
            calls, self._calls = list(self._calls.values()), {}
        code = self._process.wait()
        self._news.close()
        if self.life is not Life.CLOSED:  # not asked to stop: it died
            message = f"the engine process exited with code {code}"
            print(f"estella serve: {message}", file=sys.stderr, flush=True)
            self._failed(message)
        for done in calls:  # nobody will answer them
            done.set()

    def _failed(self, message):
        with self._lock:
            if self.life is Life.FAILED:
                return
            self.life, self.failure = Life.FAILED, EngineFailed(message)
            streams = list(self._open.values())
            self._open.clear()
        for s in streams:
            s._finish("error", f"the model failed: {message}")
        if self.on_fatal is not None:
            self.on_fatal(self.failure)


# --- the child process ---

class SentStream(Stream):
    """A stream in the child: what it is handed is kept in `unsent` until the child sends its news."""

    def __init__(self, key, prime, ids, params, child):
        super().__init__(prime, ids, params)
        self.key, self._child = key, child
        self.unsent = []      # items not yet sent (the child's lock)
        self.started = False  # it has been handed something

    def _deliver(self, item):
        self._child.deliver(self, item)


class Child:
    """The child's side: an Engine, the commands read from the parent, and the news sent back.

    A stream's news goes at once when it gets its first text (time to first character) or ends (its
    client may then send the next request); every stream's, when the scheduler is about to wait, and
    otherwise every NEWS_INTERVAL: a stream's text in between is sent as one string, so the parent
    handles a few messages per stream, not one per character. (The HTTP side sends text every
    CHUNK_INTERVAL anyway.)
    """

    def __init__(self, news, commands):
        self.engine, self._news, self._commands = None, news, commands
        self._poller = select.poll()  # the commands, read by the scheduler itself: no second thread
        self._poller.register(commands.fileno(), select.POLLIN)
        self.finished = threading.Event()       # the last command is answered, or the parent is gone
        self.streams = {}                       # key -> SentStream until it ends, for cancel
        self.batch_sizes = collections.deque()  # one per tick, for the metrics
        self._lock = threading.Lock()           # the streams' unsent items, and sending (scheduler and calls)
        self._dirty = {}                        # the streams with unsent items (a dict: ordered, and removable)
        self._urgent = {}                       # those of them whose news goes at once (started or ended)
        self._sent_at = time.monotonic()        # when every stream's news last went

    def start(self, engine):
        engine.on_step, engine.on_news, engine.on_fatal = self.batch_sizes.append, self.on_news, self.on_fatal
        self.engine = engine

    def intake(self, idle):
        """The scheduler's thread, at the top of each pass: every command that has come; while the
        engine is idle, it waits up to IDLE_WAIT for one. drain, end_now and shutdown wait for the
        scheduler, so they run on a thread of their own."""
        if self.engine is None:  # (still loading: nothing is sent before "ready")
            return
        timeout = IDLE_WAIT * 1000 if idle else 0
        while self._poller.poll(timeout):
            timeout = 0
            try:
                message = pickle.loads(self._commands.recv_bytes())
            except EOFError:  # the parent is gone: nobody reads what this process would write
                self._poller.unregister(self._commands.fileno())
                threading.Thread(target=self._parent_gone, daemon=True).start()
                return
            kind = message[0]
            if kind == "add":
                self.add(message[1])
            elif kind == "cancel":
                self.cancel(message[1])
            else:
                threading.Thread(target=self.call, args=message[1:], daemon=True).start()

    def _parent_gone(self):
        self.engine.end_now()
        self.finished.set()

    def deliver(self, stream, item):
        with self._lock:
            self._dirty[stream] = None
            stream.unsent.append(item)
            if not isinstance(item, str) and item.finish_reason is not None:
                stream.done.set()
                self.streams.pop(stream.key, None)
                self._urgent[stream] = None
            elif not stream.started:
                stream.started = True
                self._urgent[stream] = None

    def on_news(self, idle):
        """After each pass of the scheduler's loop (its thread): every stream's text is handed out and
        sent when the scheduler is about to wait or NEWS_INTERVAL has passed; that of a stream that has
        started or ended, at once."""
        if idle or time.monotonic() - self._sent_at >= NEWS_INTERVAL:
            self.engine.flush()
            self.send_news()
        elif self._urgent:
            self.send_news(urgent_only=True)

    def send_news(self, urgent_only=False):
        """What the streams (or only the urgent ones) were handed since their last news, in one message."""
        with self._lock:
            if not self._dirty and not self.batch_sizes:
                return
            if urgent_only:
                streams = [s for s in self._urgent if s in self._dirty]
                for s in streams:
                    del self._dirty[s]
            else:
                streams, self._dirty, self._sent_at = list(self._dirty), {}, time.monotonic()
            self._urgent = {}
            items = [(s.key, joined(s.unsent)) for s in streams]
            for s in streams:
                s.unsent = []
            sizes = [self.batch_sizes.popleft() for _ in range(len(self.batch_sizes))]
            self._send(("news", items, self.engine.running, self.engine.waiting, sizes))

    def _send(self, message):
        self._news.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))

    def on_fatal(self, error):
        self.send_news()  # every stream's "error" first
        with self._lock:
            self._send(("failed", repr(error)))

    def add(self, sent):
        char_to_id = self.engine.char_to_id
        streams = [SentStream(key, prime, encode_prime(char_to_id, prime)[1], params, self) for key, prime, params in sent]
        self.streams.update((s.key, s) for s in streams)
        try:
            self.engine.add(streams)
        except (Draining, QueueFull, EngineFailed) as e:  # the parent decides admission; only a failure gets here
            for s in streams:
                s._finish("error", str(e))
            self.send_news()

    def cancel(self, key):
        stream = self.streams.get(key)
        if stream is not None:
            self.engine.cancel(stream)
            self.send_news()

    def call(self, seq, name, args):
        getattr(self.engine, name)(*args)
        self.send_news()
        with self._lock:
            self._send(("done", seq))
        if name == "shutdown":  # the last command
            self.finished.set()


def joined(items):
    """A stream's unsent items with each run of plain text joined into one string."""
    if len(items) == 1:
        return items
    out, text = [], []
    for item in items:
        if isinstance(item, str):
            text.append(item)
            continue
        if text:
            out.append("".join(text))
            text = []
        out.append(item)
    if text:
        out.append("".join(text))
    return out


def child_main(commands, news, how):
    # The parent drains and stops this process; a signal to the whole group must not end it first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cpus = how.pop("cpus")
    if cpus:  # before any thread starts: the scheduler's and the interpreter's inherit it
        os.sched_setaffinity(0, cpus)
    child = Child(news, commands)
    try:
        engine = Engine.load(how.pop("export_dir"), how.pop("backend"), how.pop("precision"), how.pop("threads"),
                             intake=child.intake, **how)
    except EstellaError as e:
        news.send(("load_error", str(e)))
        return
    child.start(engine)
    news.send(("ready", engine.vocab, {"name": engine.backend.name, "precision": engine.backend.precision,
                                       "state_size": engine.backend.state_size}))
    child.finished.wait()


if __name__ == "__main__":
    child_main(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False),
               json.loads(sys.argv[3]))
