"""The Generator on the numpy backend: prime, echo, streaming, stop strings, batches, seeds, bad input."""

import numpy as np
import pytest

from estella.runtime.errors import EstellaError, SettingError
from estella.runtime.generator import MAX_STREAMS, Generator, PrimeError, Settings
from estella.runtime.sampling import SamplingError


@pytest.fixture(scope="module")
def gen(numpy_export):
    return Generator.load(numpy_export, backend="numpy")


def test_prime_is_echoed_then_n_chars_follow(gen):
    text = gen.generate("Pip", 40, temperature=0.7, seed=1)
    assert text.startswith("Pip") and len(text) == 43
    assert gen.generate("Pip", 40, temperature=0.7, seed=1, echo=False) == text[3:]


def test_greedy_text_follows_the_model_step_by_step(gen):
    text = gen.generate("Pip", 25, temperature=0, echo=False)
    logits, state = gen.step(np.array([[gen.char_to_id[c] for c in "Pip"]], np.int32), gen.initial_state())
    for ch in text:
        assert gen.vocab[int(np.argmax(logits[0, -1]))] == ch
        logits, state = gen.step(np.array([[gen.char_to_id[ch]]], np.int32), state)


def test_seeded_sampling_is_deterministic(gen):
    a = gen.generate("Pip", 60, temperature=1.0, top_k=20, top_p=0.95, seed=5)
    assert a == gen.generate("Pip", 60, temperature=1.0, top_k=20, top_p=0.95, seed=5)
    assert a != gen.generate("Pip", 60, temperature=1.0, top_k=20, top_p=0.95, seed=6)


def test_streaming_gives_the_same_text(gen):
    chars = list(gen.stream("Pip", 50, temperature=0.9, seed=3))
    assert all(len(c) == 1 for c in chars)
    assert "".join(chars) == gen.generate("Pip", 50, temperature=0.9, seed=3)


def test_batched_streams_equal_single_streams(gen):
    primes = ["Pip", "Joe, ", "Estella"]
    texts = gen.generate_many(primes, 40, temperature=0.9, seed=10)
    assert texts == [gen.generate(p, 40, temperature=0.9, seed=10 + i) for i, p in enumerate(primes)]


def test_stop_string_ends_the_text_and_is_kept(gen):
    full = gen.generate("Pip", 200, temperature=1.0, seed=2, echo=False)
    stop = full[30:32]
    cut = full.index(stop) + len(stop)
    assert gen.generate("Pip", 200, temperature=1.0, seed=2, echo=False, stop=stop) == full[:cut]
    assert gen.generate("Pip", 200, temperature=1.0, seed=2, echo=False, stop=["@@", stop]) == full[:cut]
    # the prime does not trigger a stop, only generated text does
    assert gen.generate("Pip", 5, temperature=1.0, seed=2, stop="Pip") == "Pip" + full[:5]


def test_stop_strings_in_a_batch_stop_each_stream_alone(gen):
    full = gen.generate_many(["Pip", "Joe"], 100, temperature=1.0, seed=4, echo=False)
    stop = full[0][10:12]
    stopped = gen.generate_many(["Pip", "Joe"], 100, temperature=1.0, seed=4, echo=False, stop=stop)
    for f, s in zip(full, stopped):
        assert s == (f[:f.index(stop) + len(stop)] if stop in f else f)


def test_zero_chars_returns_the_prime(gen):
    assert gen.generate("Pip", 0) == "Pip"
    assert gen.generate("Pip", 0, echo=False) == ""


def test_empty_prime_starts_from_a_newline(gen):
    assert gen.generate("", 30, temperature=0.8, seed=1) == gen.generate("\n", 30, temperature=0.8, seed=1)[1:]


def test_unknown_prime_characters_are_listed(gen):
    with pytest.raises(PrimeError, match="'#', 'é'") as e:
        gen.generate("Pip #é", 10)
    assert "skip them with skip_unknown" in str(e.value) and e.value.field == "prime"


def test_unknown_prime_characters_can_be_skipped(gen):
    assert gen.generate("P#ip", 20, seed=1, skip_unknown=True) == gen.generate("Pip", 20, seed=1)
    # nothing left: as an empty prime
    assert gen.generate("#", 20, seed=1, skip_unknown=True) == gen.generate("", 20, seed=1)


def test_stream_checks_its_settings_at_the_call(gen):
    with pytest.raises(SamplingError):
        gen.stream("Pip", 10, temperature=-1)


@pytest.mark.parametrize("kwargs, field", [
    ({"n_chars": -1}, "chars"),
    ({"n_chars": 2.5}, "chars"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": 2**63}, "top_k"),
    ({"seed": -3}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"stop": ""}, "stop"),
    ({"stop": ["ok", 3]}, "stop"),
])
def test_bad_settings_are_refused(gen, kwargs, field):
    """A setting's error carries its field; the message names it as the Python API does."""
    args = {"prime": "Pip", "n_chars": 10, **kwargs}
    with pytest.raises(SettingError, match=f"^{field} must") as e:
        gen.generate(**args)
    assert e.value.field == field


def test_settings_by_name_by_position_or_as_one_object(gen):
    named = gen.generate("Pip", 30, temperature=0.8, top_k=20, seed=3, echo=False)
    assert gen.generate("Pip", 30, 0.8, 20, None, 3, None, False) == named
    assert gen.generate("Pip", 30, Settings(temperature=0.8, top_k=20, seed=3, echo=False)) == named
    assert gen.generate_many(["Pip"], 30, Settings(temperature=0.8, top_k=20, seed=3, echo=False)) == [named]
    with pytest.raises(EstellaError, match="unexpected keyword argument 'temprature'.*the settings are: temperature"):
        gen.generate("Pip", 30, temprature=0.8)


def test_at_most_max_streams_in_one_batch(gen):
    with pytest.raises(EstellaError, match=f"^num_samples must be at most {MAX_STREAMS}"):
        gen.generate_many(["Pip"] * (MAX_STREAMS + 1), 1)
    assert len(gen.generate_many(["P"] * MAX_STREAMS, 1, temperature=0)) == MAX_STREAMS
