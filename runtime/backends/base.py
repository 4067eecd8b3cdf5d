"""What every backend shares: the step signature and the checks on what is passed to it."""

import numpy as np

from ..errors import EstellaError


class StepInputError(EstellaError):
    """ids or state passed to step() have the wrong shape, dtype or values."""


class Backend:
    """One exported step function: (ids int32 [B, T], state float32 [B, U]) -> (logits [B, T, V], new_state [B, U]).

    Subclasses set name, precision, vocab_size, units, max_batch, max_time (None where dynamic)
    and implement _step, which trusts its inputs (checked by step) and takes at most max_time steps.
    max_batch and max_time describe one call of the graph; step() itself takes any batch and time.
    """

    name = precision = None
    vocab_size = units = 0
    max_batch = max_time = None

    def step(self, ids, state):
        """Any batch and any time: a graph made for T=1 runs a longer input one character at a time."""
        ids, state = self.check_inputs(ids, state)
        if self.max_time is None or ids.shape[1] <= self.max_time:
            return self._step(ids, state)
        logits = np.empty((ids.shape[0], ids.shape[1], self.vocab_size), np.float32)
        for t in range(ids.shape[1]):
            step_logits, state = self._step(ids[:, t:t + 1], state)
            logits[:, t] = step_logits[:, 0]
        return logits, state

    def _step(self, ids, state):
        raise NotImplementedError

    def decoder(self, batch):
        """The step of one decode loop over `batch` streams, one character at a time: trusted inputs,
        like _step, and outputs that may be buffers the next call overwrites (so a caller uses the
        logits and passes the state back before it calls again). A backend with a cheaper way to
        step in a loop than _step overrides this."""
        return self._step

    def initial_state(self, batch=1):
        return np.zeros((batch, self.units), np.float32)

    def check_inputs(self, ids, state):
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.size == 0 or ids.dtype.kind not in "iu":
            raise StepInputError(f"ids must be an integer array of shape [batch, time], both >= 1, "
                                 f"got dtype {ids.dtype} shape {list(ids.shape)}")
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise StepInputError(f"ids must be in [0, {self.vocab_size}), got values from {ids.min()} to {ids.max()}")
        if not isinstance(state, np.ndarray) or state.dtype != np.float32:
            raise StepInputError(f"state must be a float32 numpy array, got {getattr(state, 'dtype', type(state).__name__)}")
        batch = ids.shape[0]
        if state.shape != (batch, self.units):
            raise StepInputError(f"state must have shape [batch, units] = [{batch}, {self.units}], "
                                 f"got {list(state.shape)}")
        return np.ascontiguousarray(ids, np.int32), np.ascontiguousarray(state)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} {self.precision} V={self.vocab_size} U={self.units}>"
