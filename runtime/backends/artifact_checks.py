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


def check_precision(artifact, quantized):
    """An int8 artifact holds int8 tensors and a float32 one none: a manifest that swapped two files is refused."""
    claimed = artifact["precision"]
    if (claimed == "int8") != bool(quantized):
        actual = "an int8" if quantized else "a float32"
        raise ArtifactError(f"artifact {artifact['name']!r} ({artifact['path']}) is {actual} graph but the manifest "
                            f"says {claimed}: the manifest and its files do not belong together; re-export it")
