"""Answering a completion request from its streams: the whole answer, or server-sent events as
the text comes, in the shape of OpenAI's completions or chat completions.

The streams are read only through what the engine hands them (Stream.take: immutable deltas) and
Stream.done; each request's own count of what it sent is kept here (Answer).
"""

import asyncio
import json
import threading
import time

from starlette.responses import Response, StreamingResponse

from .errors import error_response

DEFAULT_MAX_TOKENS = 16      # OpenAI's default for the legacy completions endpoint
CHUNK_INTERVAL = 0.05        # s between two SSE chunks of a stream: at most 20 events/s per stream
DONE = "data: [DONE]\n\n"    # the last event of a stream of server-sent events


class Answer:
    """One HTTP request's streams and what the reader has got from them (the reader's own state)."""

    def __init__(self, streams, prompts, echo, form, head, started):
        self.streams, self.echo, self.form, self.head, self.started = streams, echo, form, head, started
        n = len(streams) // prompts
        self.prompt_chars = sum(len(streams[k * n].prime) for k in range(prompts))  # once per prompt, not per choice
        self.sent = [0] * len(streams)  # characters handed to the client so far, per choice
        self.first = [True] * len(streams)

    def usage(self):
        completion = sum(self.sent)
        return {"prompt_tokens": self.prompt_chars, "completion_tokens": completion,
                "total_tokens": self.prompt_chars + completion}


class ClientGone(Exception):
    pass


class Watch:
    """Waits for news from the scheduler thread, or for the client to leave (http.disconnect, as vLLM
    listens for it). One future per wait, resolved from either side: no task per wait."""

    def __init__(self, request):
        self.loop, self.thread = asyncio.get_running_loop(), threading.get_ident()
        self.future = None
        self.gone = False
        self.listener = asyncio.ensure_future(self._disconnect(request.receive))
        self.listener.add_done_callback(self._on_gone)

    @staticmethod
    async def _disconnect(receive):
        while (await receive())["type"] != "http.disconnect":
            pass

    def _on_gone(self, task):
        self.gone = not task.cancelled()
        self._resolve()

    def _resolve(self):
        if self.future is not None and not self.future.done():
            self.future.set_result(None)

    def _wake(self):  # called by whoever hands the stream its news: the scheduler's thread, or this loop
        if threading.get_ident() == self.thread:
            self._resolve()
        else:
            self.loop.call_soon_threadsafe(self._resolve)

    async def news(self, streams, final_only=False, timeout=None):
        """Return once a stream has a delta (or, if final_only, has ended), or after `timeout` s."""
        if self.gone:
            raise ClientGone()
        self.future = self.loop.create_future()
        for s in streams:
            s.on_delta(self._wake, final_only)
        for s in streams:  # asked first, then looked: a delta in between is seen here
            if s.done.is_set() or (not final_only and s.has_news()):
                return
        timer = self.loop.call_later(timeout, self._resolve) if timeout is not None else None
        try:
            await self.future
        finally:
            if timer is not None:
                timer.cancel()
        if self.gone:
            raise ClientGone()

    def close(self):
        self.listener.cancel()


def finish(engine, answer, metrics, status):
    for s in answer.streams:
        if not s.done.is_set():
            engine.cancel(s)
    metrics.requests.labels(status).inc()
    metrics.chars.inc(sum(answer.sent))
    if status == "200":
        metrics.latency.observe(time.perf_counter() - answer.started)


async def whole(request, engine, answer, metrics):
    watch = Watch(request)
    try:
        while running := [s for s in answer.streams if not s.done.is_set()]:
            await watch.news(running, final_only=True)  # (a stream that has ended would answer at once)
    except ClientGone:
        finish(engine, answer, metrics, "499")
        return Response(b"", status_code=499)
    finally:
        watch.close()
    done = [s.result(0) for s in answer.streams]
    for i, d in enumerate(done):
        answer.sent[i] = len(d.text)
    failed = next((d.error for d in done if d.finish_reason == "error"), None)
    if failed is not None:
        finish(engine, answer, metrics, "500")
        return error_response(500, failed, "server_error", "request_failed")
    finish(engine, answer, metrics, "200")
    choices = [answer.form.whole_choice(i, s, d, answer.echo) for i, (s, d) in enumerate(zip(answer.streams, done))]
    return {**answer.head, "object": answer.form.object, "choices": choices, "usage": answer.usage()}


async def sse(request, engine, answer, include_usage, metrics):
    """Server-sent events: each chunk carries what is ready; the first character goes out at once.
    What is ready at one wake-up goes out as one piece (one write), the last chunk with [DONE]."""
    streams, form = answer.streams, answer.form
    ended = [False] * len(streams)
    head = {**answer.head, "object": form.chunk_object}
    watch = Watch(request)
    status = "499"
    try:
        while True:
            await watch.news([s for s, e in zip(streams, ended) if not e])
            events = []
            for i, s in enumerate(streams):
                delta = None if ended[i] else s.take()
                if delta is None:
                    continue
                if delta.finish_reason == "error":
                    status = "500"
                    error = {"message": delta.error, "type": "server_error", "param": None, "code": "request_failed"}
                    yield f"data: {json.dumps({'error': error})}\n\n{DONE}"
                    return
                if delta.text and answer.first[i]:
                    metrics.ttft.observe(time.perf_counter() - answer.started)
                choice = form.chunk_choice(i, s, delta.text, delta.logprobs, delta.finish_reason, answer)
                answer.sent[i] += len(delta.text)
                answer.first[i] = False
                ended[i] = delta.finish_reason is not None
                events.append(f"data: {json.dumps({**head, 'choices': [choice]})}\n\n")
            if all(ended):
                if include_usage:
                    events.append(f"data: {json.dumps({**head, 'choices': [], 'usage': answer.usage()})}\n\n")
                yield "".join(events) + DONE
                status = "200"
                return
            if events:
                yield "".join(events)
            # Coalesce: the next chunk carries all that is ready CHUNK_INTERVAL from now, or goes at
            # once when a stream ends, so that a short request is not held back for the interval.
            await watch.news([s for s, e in zip(streams, ended) if not e], final_only=True, timeout=CHUNK_INTERVAL)
    except ClientGone:
        pass
    finally:
        watch.close()
        finish(engine, answer, metrics, status)


class EventStream(StreamingResponse):
    """A StreamingResponse of sse() without the task Starlette starts per response to listen for the
    client leaving (sse() listens itself, Watch), and whose last piece ends the body in the same write."""

    media_type = "text/event-stream"

    async def __call__(self, scope, receive, send):
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            ended = False
            async for piece in self.body_iterator:
                ended = piece.endswith(DONE)
                await send({"type": "http.response.body", "body": piece.encode(), "more_body": not ended})
            if not ended:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client has gone while a piece was sent (sse() has counted it)
            pass
        finally:
            await self.body_iterator.aclose()


class CompletionForm:
    id_prefix, object, chunk_object, logprobs_field = "cmpl-", "text_completion", "text_completion", "logprobs"

    @staticmethod
    def max_tokens(body):
        return DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens

    @staticmethod
    def logprobs(entries, prime, offset):
        """OpenAI's legacy logprobs object: the prime's characters (echoed) have null entries."""
        if entries is None:
            return None
        chars = list(prime) + [c for c, _, _ in entries]
        return {"tokens": chars,
                "token_logprobs": [None] * len(prime) + [lp for _, lp, _ in entries],
                "top_logprobs": [None] * len(prime) + [dict(top) for _, _, top in entries],
                "text_offset": list(range(offset, offset + len(chars)))}

    def whole_choice(self, i, stream, done, echo):
        prefix = stream.prime if echo else ""
        return {"index": i, "text": prefix + done.text, "logprobs": self.logprobs(done.logprobs, prefix, 0),
                "finish_reason": done.finish_reason}

    def chunk_choice(self, i, stream, text, entries, finish_reason, answer):
        prefix = stream.prime if answer.echo and answer.first[i] else ""  # the echoed prime goes with the first chunk
        offset = answer.sent[i] + (len(stream.prime) if answer.echo else 0) - len(prefix)
        return {"index": i, "text": prefix + text, "logprobs": self.logprobs(entries, prefix, offset),
                "finish_reason": finish_reason}


class ChatForm:
    id_prefix, object, chunk_object, logprobs_field = "chatcmpl-", "chat.completion", "chat.completion.chunk", \
        "top_logprobs"

    @staticmethod
    def max_tokens(body):
        given = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        return DEFAULT_MAX_TOKENS if given is None else given

    @staticmethod
    def logprobs(entries):
        if entries is None:
            return None

        def token(c, lp):
            return {"token": c, "logprob": lp, "bytes": list(c.encode("utf-8"))}

        return {"content": [{**token(c, lp), "top_logprobs": [token(t, tlp) for t, tlp in top]}
                            for c, lp, top in entries]}

    def whole_choice(self, i, stream, done, echo):
        return {"index": i, "message": {"role": "assistant", "content": done.text},
                "logprobs": self.logprobs(done.logprobs), "finish_reason": done.finish_reason}

    def chunk_choice(self, i, stream, text, entries, finish_reason, answer):
        delta = {"role": "assistant", "content": text} if answer.first[i] else {"content": text} if text else {}
        return {"index": i, "delta": delta, "logprobs": self.logprobs(entries), "finish_reason": finish_reason}


COMPLETION, CHAT = CompletionForm(), ChatForm()
