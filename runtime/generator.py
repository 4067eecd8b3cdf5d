"""Generate text from an export: run the prime through the model, then sample one character at a time.

    gen = Generator.load("runs/default/export")              # backend="auto", precision="float32"
    print(gen.generate("Pip", 500, temperature=0.5, seed=1))
    for ch in gen.stream("Pip", 500): print(ch, end="", flush=True)
    texts = gen.generate_many(["Pip", "Joe"], 200, seed=1)  # several streams in one batched step

The prime is run in one call of T characters where the artifact takes T > 1 (numpy, savedmodel),
otherwise one character at a time, and it is echoed at the start of the text unless echo=False.
An empty prime starts from the zero state with a newline fed as the first character (the model
then writes as at the start of a paragraph); it needs a vocabulary that has "\n".
Stop strings end a stream once its generated text ends with one of them; the stop string is kept
(a stream has already yielded it).
"""

import dataclasses

import numpy as np

from .backends import open_backend
from .errors import EstellaError, SettingError
from .manifest import load_manifest
from .sampling import BatchSampler, SamplingParams, check_integer, check_seed
from .stops import StopMatcher, check_stops

EMPTY_PRIME = "\n"
# Streams in one batch: each holds a state and a row of logits; 100,000 took 3 GB for no use.
MAX_STREAMS = 4096


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a text is sampled, shared by generate, stream, generate_many and stream_many."""
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list | None = None
    echo: bool = True
    skip_unknown: bool = False

    @classmethod
    def of(cls, *settings, **named):
        """One Settings from a Settings, or from its fields by position and name."""
        if len(settings) == 1 and isinstance(settings[0], Settings) and not named:
            return settings[0]
        try:
            return cls(*settings, **named)
        except TypeError as e:  # an unknown keyword: name the ones there are
            fields = ", ".join(f.name for f in dataclasses.fields(cls))
            raise EstellaError(f"{e}; the settings are: {fields}") from None


class PrimeError(SettingError):
    """The prime has characters outside the vocabulary, or is empty where a newline cannot stand in."""

    def __init__(self, rule, value, unknown=None):
        self.unknown = unknown
        super().__init__("prime", rule, value)

    def worded(self, name_of=str):
        if self.unknown is None:
            return f"{name_of('prime')} {self.rule}"
        return (f"{name_of('prime')} has characters that are not in the vocabulary: {self.unknown!r} (remove "
                f"them, or skip them with {name_of('skip_unknown')})")


class Generator:
    def __init__(self, backend, vocab):
        self.backend = backend
        self.vocab = list(vocab)
        self.char_to_id = {c: i for i, c in enumerate(self.vocab)}

    @classmethod
    def load(cls, export_dir, backend="auto", precision="float32", **options):
        manifest = load_manifest(export_dir, verify=False)  # open_backend verifies the files it uses
        return cls(open_backend(export_dir, backend, precision, manifest=manifest, **options),
                   manifest["model"]["vocab"])

    def step(self, ids, state):
        """The bare model: ids int32 [B, T], state float32 [B, S] -> logits [B, T, V], new_state [B, S]."""
        return self.backend.step(ids, state)

    def initial_state(self, batch=1):
        return self.backend.initial_state(batch)

    def encode(self, prime, skip_unknown=False):
        return encode_prime(self.char_to_id, prime, skip_unknown)

    def generate(self, prime, n_chars, *settings, **named) -> str:
        """The text: the prime (if echoed) and n_chars sampled characters. settings: the fields of
        Settings (temperature=1.0, top_k=None, top_p=None, seed=None, stop=None, echo=True,
        skip_unknown=False), by name or in that order, or one Settings."""
        return "".join(self.stream(prime, n_chars, *settings, **named))

    def stream(self, prime, n_chars, *settings, **named):
        """Yield the text one character at a time as it is produced (the prime first, if echoed).

        Bad settings raise here, at the call, not at the first character."""
        steps = self.stream_many([prime], n_chars, *settings, **named)
        return (chars[0] for chars in steps if chars[0])

    def generate_many(self, primes, n_chars, *settings, **named) -> list:
        """One text per prime, generated as one batch. Stream i uses seed + i, so it equals
        generate(primes[i], ..., seed=seed + i) on a backend whose batched step is the same math."""
        texts = [[] for _ in primes]
        for chars in self.stream_many(primes, n_chars, *settings, **named):
            for text, ch in zip(texts, chars):
                text.append(ch)
        return ["".join(t) for t in texts]

    def stream_many(self, primes, n_chars, *settings, **named):
        """An iterator of lists with one character per stream ("" where a stream has stopped or its prime ended)."""
        s = Settings.of(*settings, **named)
        if not primes:
            raise EstellaError("give at least one prime")
        if len(primes) > MAX_STREAMS:
            raise SettingError("num_samples", f"must be at most {MAX_STREAMS} (streams in one batch)", len(primes))
        sampler = BatchSampler([SamplingParams(s.temperature, s.top_k, s.top_p)] * len(primes))  # checks first
        n_chars = check_integer("chars", n_chars, 0)
        stops = check_stops(s.stop)
        encoded = [self.encode(p, s.skip_unknown) for p in primes]  # all primes checked before any work
        seed = check_seed(s.seed, len(primes))
        seeds = [None] * len(primes) if seed is None else [seed + i for i in range(len(primes))]
        rngs = [np.random.default_rng(one) for one in seeds]
        return self._run(encoded, n_chars, sampler, rngs, stops, s.echo)

    def _run(self, encoded, n_chars, sampler, rngs, stops, echo):
        if echo:
            longest = max(len(text) for text, _ in encoded)
            for i in range(longest):
                yield [text[i] if i < len(text) else "" for text, _ in encoded]
        if n_chars == 0:
            return
        # Each prime runs alone (primes differ in length); the streams then step as one batch.
        states, last_logits = [], []
        for _, ids in encoded:
            logits, state = self.backend.step(ids[None, :], self.backend.initial_state(1))
            states.append(state)
            last_logits.append(logits[0, -1])
        state = np.concatenate(states)
        logits = np.stack(last_logits)
        yield from self._decode(logits, state, n_chars, sampler, rngs, stops)

    def _decode(self, logits, state, n_chars, sampler, rngs, stops):
        """The hot loop: sample every stream in one call, feed back. Inputs are known good, so it
        runs the backend's decode step, whose outputs are consumed before the next call."""
        batch = len(rngs)
        step, vocab = self.backend.decoder(batch), self.vocab
        ids = np.zeros((batch, 1), np.int32)
        matchers = [StopMatcher(stops, keep=True) for _ in range(batch)] if stops else None
        done = [False] * batch
        last = n_chars - 1
        for n in range(n_chars):
            next_ids = sampler(logits, rngs)
            chars = [vocab[i] for i in next_ids.tolist()]
            if matchers:
                for b in range(batch):
                    if done[b]:
                        chars[b] = ""  # a stopped stream keeps stepping; nothing more is kept
                    else:
                        done[b] = matchers[b].push(chars[b])
            yield chars
            if n == last or (matchers and all(done)):
                return
            ids[:, 0] = next_ids
            step_logits, state = step(ids, state)
            logits = step_logits[:, -1]


def encode_prime(char_to_id, prime, skip_unknown=False):
    """(the prime's characters that are kept, their ids int32 [T]); an empty prime is a newline's id."""
    unknown = sorted(set(prime) - char_to_id.keys())
    if unknown and not skip_unknown:
        raise PrimeError("has characters that are not in the vocabulary", prime, unknown)
    kept = "".join(c for c in prime if c in char_to_id)
    if not kept:
        if EMPTY_PRIME not in char_to_id:
            raise PrimeError("is empty (after skipping unknown characters) and the vocabulary has no newline "
                             "to start from; give a prime", prime)
        return kept, np.array([char_to_id[EMPTY_PRIME]], np.int32)
    return kept, np.array([char_to_id[c] for c in kept], np.int32)
