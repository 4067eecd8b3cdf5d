"""The hot loop's shortcuts give what the plain code gives: the backends' decode steps (reused buffers)
against step(), and the sampler's one-stream path against sample_batch, id for id."""

import numpy as np
import pytest

from estella.runtime.backends import open_backend
from estella.runtime.generator import Generator
from estella.runtime.sampling import BatchSampler, sample_batch

CASES = [("tflite", "float32"), ("tflite", "int8"), ("onnx", "float32"), ("onnx", "int8"), ("numpy", "float32")]


def decode(backend, step, ids, state):
    """Run step over ids [B, T] one character at a time, feeding its state back; copies of the outputs."""
    logits, states = [], []
    for t in range(ids.shape[1]):
        step_logits, state = step(ids[:, t:t + 1], state)
        logits.append(step_logits.copy())
        states.append(state.copy())
    return logits, states


def random_inputs(backend, batch, steps=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, backend.vocab_size, (batch, steps)).astype(np.int32)
    state = (0.5 * rng.standard_normal((batch, backend.state_size))).astype(np.float32)
    return ids, state


@pytest.mark.parametrize("name, precision", CASES)
def test_decode_step_equals_step_and_leaves_its_input_alone(real_export, name, precision):
    backend = open_backend(real_export, name, precision)
    for batch in (3, 1, 2):  # the tflite graph is resized each time
        ids, state = random_inputs(backend, batch, seed=batch)
        given = state.copy()
        want = decode(backend, backend.step, ids, state)
        got = decode(backend, backend.decoder(batch), ids, state)
        for a, b in zip(want[0] + want[1], got[0] + got[1]):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(state, given)


@pytest.mark.parametrize("name, precision", CASES)
def test_interleaved_decode_loops_do_not_share_buffers(real_export, name, precision):
    """Two loops on one backend, B=2 and B=1, stepped in turn: each gets what it gets alone."""
    backend = open_backend(real_export, name, precision)
    (ids_a, state_a), (ids_b, state_b) = random_inputs(backend, 2, seed=1), random_inputs(backend, 1, seed=2)
    alone_a = decode(backend, backend.decoder(2), ids_a, state_a)
    alone_b = decode(backend, backend.decoder(1), ids_b, state_b)
    step_a, step_b = backend.decoder(2), backend.decoder(1)
    got_a, got_b = ([], []), ([], [])
    for t in range(ids_a.shape[1]):
        for step, ids, got, which in ((step_a, ids_a, got_a, "a"), (step_b, ids_b, got_b, "b")):
            logits, new_state = step(ids[:, t:t + 1], state_a if which == "a" else state_b)
            got[0].append(logits.copy())
            got[1].append(new_state.copy())
            if which == "a":
                state_a = new_state
            else:
                state_b = new_state
    for alone, got in ((alone_a, got_a), (alone_b, got_b)):
        for a, b in zip(alone[0] + alone[1], got[0] + got[1]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, precision", CASES)
def test_interleaved_streams_of_one_generator(real_export, name, precision):
    """A batch of two streams and a single stream of one Generator, advanced in turn, write what they
    write alone; stream and generate agree."""
    gen = Generator.load(real_export, name, precision)
    settings = dict(temperature=0.9, echo=False)
    pair_alone = gen.generate_many(["Pip", "Joe"], 50, seed=1, **settings)
    single_alone = gen.generate("Estella", 50, seed=7, **settings)
    pair = gen.stream_many(["Pip", "Joe"], 50, seed=1, **settings)
    single = gen.stream("Estella", 50, seed=7, **settings)
    pair_text, single_text = ["", ""], ""
    for chars, ch in zip(pair, single):
        pair_text = [t + c for t, c in zip(pair_text, chars)]
        single_text += ch
    assert pair_text == pair_alone and single_text == single_alone
    assert "".join(gen.stream("Estella", 50, seed=7, **settings)) == single_alone


PLAIN = [1.0, 0.5, 1.7, 0.05, 1e-30]  # 1/1e-30 fits float32 but overflows most scaled logits


def odd_logits(rng, batch, vocab=40):
    """Mostly ordinary rows, some with values that overflow when scaled, inf, -inf or NaN."""
    logits = (rng.standard_normal((batch, vocab)) * 4).astype(np.float32)
    for row in logits:
        kind = rng.integers(0, 8)
        if kind == 0:
            row[rng.integers(vocab)] = 3e38
        elif kind == 1:
            row[rng.integers(vocab)] = -3e38
        elif kind == 2:
            row[rng.integers(vocab)] = (np.inf, -np.inf, np.nan)[rng.integers(3)]
    return logits


@pytest.mark.filterwarnings("error::RuntimeWarning")  # overflowing logits are handled, never warned about
@pytest.mark.parametrize("temperature", PLAIN)
def test_one_plain_stream_gets_the_ids_of_sample_batch(temperature):
    """BatchSampler's shortcut for one stream with no top-k/top-p cut (its row as a 1-d array) draws
    the ids that sample_batch, the general code, draws with the same uniforms."""
    batch = 1
    rng = np.random.default_rng(int(temperature * 1000))
    sampler = BatchSampler([(temperature, None, None)] * batch)
    rngs = [np.random.default_rng(b) for b in range(batch)]
    twins = [np.random.default_rng(b) for b in range(batch)]
    for _ in range(400):
        logits = odd_logits(rng, batch)
        uniforms = np.array([r.random() for r in twins])
        want = sample_batch(logits, sampler.inv_temperature, sampler.top_k, sampler.top_p, uniforms)
        assert sampler(logits, rngs).tolist() == want.tolist()
