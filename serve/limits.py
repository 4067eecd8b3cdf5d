"""The bounds on one request's work. Each is a flag of `estella serve` with a default that serves
people, not abuse; a request past one answers 400 naming the limit and its flag.

The engine bounds the rest itself: --max-chars (max_tokens), --max-batch (prompts x n in one request
are at most a batch), --max-queue, and how much of a prime is fed per tick.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Limits:
    max_stop: int = 4                  # stop strings per request (OpenAI allows 4)
    max_stop_chars: int = 64           # characters per stop string
    max_prompt_chars: int = 65536      # characters per prompt (a chat's rendered messages)
    max_request_chars: int = 16384     # prompts x n x max_tokens: characters one request may ask for
    max_logprobs: int = 5              # logprobs (completions) / top_logprobs (chat), as OpenAI allows
    max_json_depth: int = 32           # nesting of the JSON body
    max_body_bytes: int = 1 << 20      # request body

    # field name -> the flag that sets it, for the messages
    FLAGS = {"max_stop": "--max-stop", "max_stop_chars": "--max-stop-chars", "max_prompt_chars": "--max-prompt-chars",
             "max_request_chars": "--max-request-chars", "max_logprobs": "--max-logprobs",
             "max_json_depth": "--max-json-depth", "max_body_bytes": "--max-body-bytes"}

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{self.FLAGS[field.name]} must be an integer >= 1, got {value!r}")


class LimitExceeded(Exception):
    """A request past one of the server's limits: message names the field, the limit and its flag."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


def check_request(limits, prompts, n, max_tokens, stop, logprobs, logprobs_field="logprobs"):
    """prompts: the prompts (a chat's rendered prime); the others as the request gives them (types checked)."""
    for prompt in prompts:
        if len(prompt) > limits.max_prompt_chars:
            raise LimitExceeded("prompt", f"a prompt may have at most {limits.max_prompt_chars} characters (the "
                                f"server's --max-prompt-chars), got {len(prompt)}")
    stops = [stop] if isinstance(stop, str) else stop or []
    if len(stops) > limits.max_stop:
        raise LimitExceeded("stop", f"at most {limits.max_stop} stop strings (the server's --max-stop), got {len(stops)}")
    longest = max((len(s) for s in stops), default=0)
    if longest > limits.max_stop_chars:
        raise LimitExceeded("stop", f"a stop string may have at most {limits.max_stop_chars} characters (the "
                            f"server's --max-stop-chars), got {longest}")
    asked = len(prompts) * n * max_tokens
    if asked > limits.max_request_chars:
        raise LimitExceeded("max_tokens", f"prompts x n x max_tokens = {len(prompts)} x {n} x {max_tokens} = {asked} "
                            f"is more than the {limits.max_request_chars} characters one request may ask for (the "
                            "server's --max-request-chars)")
    if logprobs is not None and logprobs > limits.max_logprobs:
        raise LimitExceeded(logprobs_field, f"{logprobs_field} may be at most {limits.max_logprobs} (the server's "
                            f"--max-logprobs), got {logprobs}")


def json_depth(body):
    """The deepest nesting of arrays and objects in a JSON text (bytes), counted without parsing it,
    so that a body nested 100,000 deep is refused before json.loads recurses into it."""
    data = np.frombuffer(body, np.uint8)
    if not data.size:
        return 0
    # Brackets inside strings do not count: mask the bytes between unescaped quotes.
    quote = data == ord('"')
    if quote.any():
        backslash = data == ord("\\")
        # a quote is escaped when an odd run of backslashes precedes it
        run = np.zeros(data.size, np.int64)
        idx = np.flatnonzero(backslash)
        if idx.size:
            starts = np.ones(idx.size, bool)
            starts[1:] = np.diff(idx) != 1
            group = np.cumsum(starts) - 1
            first = idx[starts][group]
            run[idx] = idx - first + 1
        escaped = np.zeros(data.size, bool)
        escaped[1:] = quote[1:] & (run[:-1] % 2 == 1)
        real = quote & ~escaped
        inside = (np.cumsum(real) % 2 == 1) & ~real
    else:
        inside = np.zeros(data.size, bool)
    opens = ((data == ord("[")) | (data == ord("{"))) & ~inside
    closes = ((data == ord("]")) | (data == ord("}"))) & ~inside
    depth = np.cumsum(opens.astype(np.int64) - closes.astype(np.int64))
    return int(depth.max(initial=0))
