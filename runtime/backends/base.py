"""What every backend shares: the step signature and the checks on what is passed to it."""

import numpy as np

from ..errors import EstellaError


class StepInputError(EstellaError):
    """ids or state passed to step() have the wrong shape, dtype or values."""


class ArtifactError(EstellaError):
    """An artifact that the interpreter cannot load, or whose inputs and outputs are not the step's."""


def check_signature(artifact, specs):
    """specs: {tensor name: (shape, dtype)} as the graph declares them (dims None or a name where dynamic).
    Returns (vocab_size, state_size, batch, time) or raises ArtifactError naming the artifact and tensor."""
    def fail(why):
        raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}) is not an estella step graph: {why}; "
                            "re-export it")

    ranks = {"ids": 2, "state": 2, "logits": 3, "new_state": 2}
    dtypes = {"ids": "int32", "state": "float32", "logits": "float32", "new_state": "float32"}
    for name, rank in ranks.items():
        if name not in specs:
            fail(f"it has no tensor {name!r} (it has {sorted(specs)})")
        shape, dtype = specs[name]
        if shape is None or len(shape) != rank:
            fail(f"{name} has shape {shape}, not rank {rank}")
        if dtype is not None and dtype != dtypes[name]:
            fail(f"{name} is {dtype}, not {dtypes[name]}")
    vocab_size, state_size = specs["logits"][0][-1], specs["state"][0][-1]
    if not isinstance(vocab_size, int) or not isinstance(state_size, int):
        fail(f"logits' last dimension ({vocab_size}) and state's ({state_size}) must be fixed")
    if specs["new_state"][0][-1] != state_size:
        fail(f"new_state has width {specs['new_state'][0][-1]} but state has {state_size}")
    batch, time = (d if isinstance(d, int) and d > 0 else None for d in specs["ids"][0])
    return int(vocab_size), int(state_size), batch, time


class Backend:
    """One exported step function: (ids int32 [B, T], state float32 [B, S]) -> (logits [B, T, V], new_state [B, S]).

    The state row is opaque above the backends: S floats, zeros at the start (how its parts split
    into layers is the manifest's state.layout, which only a backend that runs the cells reads).
    Subclasses set name, precision, vocab_size, state_size, max_batch, max_time (None where dynamic)
    and implement _step, which trusts its inputs (checked by step) and takes at most max_time steps.
    open_backend constructs one as cls(export_dir, artifact, manifest, content=verified bytes, or
    {path: bytes} of every file of a folder artifact, num_threads=N or None); the constructor reads the shapes from the artifact
    itself and refuses one whose inputs and outputs are not the step's (check_signature).
    max_batch and max_time describe one call of the graph; step() itself takes any batch and time.
    """

    name = precision = None
    vocab_size = state_size = 0
    max_batch = max_time = None

    @classmethod
    def check_installed(cls):
        """Raise MissingDependency, naming the pip extra, where this backend's interpreter is not installed."""

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

    def step_trusted(self, ids, state):
        """step() without its checks, for callers whose inputs are known good (the serving engine,
        benchmarks): ids int32 [B, T] with ids in range and T <= max_time (when set), state a
        C-contiguous float32 [B, state size]. The outputs are fresh arrays, as step()'s are."""
        return self._step(ids, state)

    def _step(self, ids, state):
        raise NotImplementedError

    def decoder(self, batch):
        """The step of one decode loop over `batch` streams, one character at a time: trusted inputs,
        like _step, and outputs that may be buffers the next call overwrites (so a caller uses the
        logits and passes the state back before it calls again). A backend with a cheaper way to
        step in a loop than _step overrides this."""
        return self._step

    def initial_state(self, batch=1):
        return np.zeros((batch, self.state_size), np.float32)

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
        if state.shape != (batch, self.state_size):
            raise StepInputError(f"state must have shape [batch, state_size] = [{batch}, {self.state_size}], "
                                 f"got {list(state.shape)}")
        return np.ascontiguousarray(ids, np.int32), np.ascontiguousarray(state)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name} {self.precision} V={self.vocab_size} S={self.state_size}>"
