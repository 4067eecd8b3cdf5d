"""The one stop-string rule, shared by `estella generate` and the server.

A stream stops once its generated text ends with one of its stop strings. `generate` keeps the
stop string (it has already written it); the server strips it, as OpenAI's API does, and so holds
back the characters that might begin a stop string until it knows they do not.

    matcher = StopMatcher(["\\n\\n", "THE END"], keep=False)
    for ch in chars:
        stopped = matcher.push(ch)      # True once the text ends with a stop string
        final = matcher.final           # how many characters are final text now
"""

from .errors import SettingError


def check_stops(stop, field="stop"):
    """A list of non-empty strings from None, a string, or a list/tuple of strings."""
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, (list, tuple)) else None
    if stops is None or not all(isinstance(s, str) and s for s in stops):
        raise SettingError(field, "must be a non-empty string, or a list of them", stop)
    return stops


class StopMatcher:
    """Fed one character at a time; says when the text ends with a stop string, and how much of the
    text is final: with keep=True all of it; with keep=False the stop string is not text, and a tail
    that might begin one is not final yet."""

    def __init__(self, stops, keep=True):
        self.stops = tuple(stops)
        self.keep = keep
        self.longest = max((len(s) for s in self.stops), default=0)
        self.length = 0   # characters pushed
        self.final = 0    # characters that are final text
        self.stop = None  # the stop string met, once met
        self._tail = ""

    def push(self, ch):
        """Add one character; return True once the text ends with a stop string (then push no more)."""
        self.length += 1
        if not self.longest:
            self.final = self.length
            return False
        self._tail = tail = (self._tail + ch)[-self.longest:]
        for s in self.stops:
            if tail.endswith(s):
                self.stop = s
                self.final = self.length if self.keep else self.length - len(s)
                return True
        self.final = self.length if self.keep else self.length - self._held(tail)
        return False

    def end(self):
        """The text ended without a stop string: a held-back tail is text after all."""
        if self.stop is None:
            self.final = self.length

    def _held(self, tail):
        """The longest k < len(s) such that the text ends with the first k characters of a stop string s."""
        held = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(tail)), held, -1):
                if tail.endswith(s[:k]):
                    held = k
                    break
        return held
