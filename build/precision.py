"""Mixed precision: --mixed-precision auto|off|bfloat16|float16, as a Keras dtype policy.

Under mixed_bfloat16 / mixed_float16 layers compute in 16 bits but keep float32 weights, so the
checkpoints, the export and its parity are the same as a float32 run's. Keras wraps the optimizer
in a LossScaleOptimizer by itself under mixed_float16 (Trainer.compile); bfloat16 has float32's
range and needs no loss scaling.
"""

import contextlib

from .errors import RunError

MODES = ("auto", "off", "bfloat16", "float16")
POLICIES = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

# What `auto` picks on a CPU with native bfloat16 (AVX512_BF16 or AMX). Measured by `make bench` on this
# project's 2-core AMD EPYC (avx512_bf16), TensorFlow 2.21 / Keras 3.15, on a quiet machine, ms/step
# median and validation loss after the same steps (BENCHMARKS.md, "estella + bf16"):
#   default preset: float32 268 ms, 2.553 nats; bfloat16 246 ms, 2.498 nats (24 steps)
#   seed preset:    float32 824 ms, 2.619 nats; bfloat16 580 ms, 2.627 nats (32 steps)
# Faster (1.09x and 1.42x) at the same loss, so auto takes bfloat16 there. (A first measurement under a
# load of ~10 had seen no gain: bf16's advantage needs the cores it runs on.)
BF16_FASTER_ON_CPU = True


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(line.split(":", 1)[1].split() for line in f if line.startswith("flags")))
    except (OSError, StopIteration):
        return set()


def cpu_has_bf16():
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def gpu_visible():
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        return bool(tf.config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax
        return any(d.platform == "gpu" for d in jax.devices())
    return False


def resolve(mode: str) -> str:
    """The concrete mode (off, bfloat16 or float16) for `mode` on this machine."""
    if mode not in MODES:
        raise RunError(f"--mixed-precision must be one of {', '.join(MODES)}, got {mode!r}")
    if mode != "auto":
        return mode
    if gpu_visible():
        return "float16"
    return "bfloat16" if cpu_has_bf16() and BF16_FASTER_ON_CPU else "off"


@contextlib.contextmanager
def policy(concrete: str):
    """Keras' global dtype policy for the layers made inside (it is read when a layer is made, so a
    model built or loaded here keeps it); the previous policy comes back after."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[concrete])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
