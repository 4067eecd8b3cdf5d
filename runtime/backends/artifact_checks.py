"""Checks on what an artifact holds, shared by the backends: finite weights, and the precision the
manifest claims. Both hold for a real export; a crafted one with matching hashes can fail them."""

import numpy as np

from .base import ArtifactError


def check_finite(artifact, tensors):
    """tensors: (name, array) pairs of the artifact's float weights; NaN or inf in any is refused."""
    for name, array in tensors:
        if array.size and not np.isfinite(array).all():
            raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}) has NaN or infinite weights "
                                f"(tensor {name!r}): it is not a trained model; re-export a run that trained")


def check_precision(artifact, quantized, quantizable=True):
    """A float32 artifact holds no int8 tensor, and an int8 one holds some where it has weights large
    enough to quantize (quantizable; the TFLite converter leaves tensors under 1024 elements float, so
    a tiny model's int8 graph may be all float): a manifest that swapped two files is refused."""
    claimed = artifact["precision"]
    if claimed == "float32" and quantized:
        actual = "an int8"
    elif claimed == "int8" and not quantized and quantizable:
        actual = "a float32"
    else:
        return
    raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}) is {actual} graph but the manifest "
                        f"says {claimed}: the manifest and its files do not belong together; re-export it")


def check_one_step(backend, artifact):
    """Run one real step from the zero state: an artifact that loads but fails or yields NaN when it
    runs is refused at load, not in the middle of a text. Interpreters raise their own exception
    types (ONNX Runtime's Fail, LiteRT's RuntimeError, ...), all of which mean a bad artifact here."""
    try:
        logits, state = backend.step(np.zeros((1, 1), np.int32), backend.initial_state(1))
    except ArtifactError:
        raise
    except Exception as e:  # noqa: BLE001 (see above)
        raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}) loads but fails when it runs one "
                            f"step: {str(e)[:300]}; re-export it") from None
    expected = ((1, 1, backend.vocab_size), (1, backend.state_size))
    if (np.shape(logits), np.shape(state)) != expected:
        raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}) returns logits {list(np.shape(logits))} "
                            f"and a state {list(np.shape(state))} from one step, not {list(expected[0])} and "
                            f"{list(expected[1])}; re-export it")
    if not (np.isfinite(logits).all() and np.isfinite(state).all()):
        raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}) returns NaN or infinite values "
                            "from one step of the zero state; re-export it")
