"""Mixed precision: --mixed-precision auto|off|bfloat16|float16, as a Keras dtype policy.

Under mixed_bfloat16 / mixed_float16 layers compute in 16 bits but keep float32 weights, so the
checkpoints, the export and its parity are the same as a float32 run's. Keras wraps the optimizer
in a LossScaleOptimizer by itself under mixed_float16 (Trainer.compile); bfloat16 has float32's
range and needs no loss scaling.
"""

from .errors import RunError

MODES = ("auto", "off", "bfloat16", "float16")
POLICIES = {"off": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}

# What `auto` picks on a CPU with native bfloat16 (AVX512_BF16 or AMX). Measured on this project's
# 2-core AMD EPYC (avx512_bf16), TensorFlow 2.21 / Keras 3.15, 8 steps after warm-up
# (python -m estella.bench.training ... --cases estella,estella+bf16):
#   default preset: float32 see BF16_MEASURED; seed preset likewise.
# bfloat16 was not faster there, so auto stays off on CPUs; set True where it measures faster.
BF16_FASTER_ON_CPU = False


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


def apply(mode: str) -> str:
    """Set Keras' global dtype policy for the models built next; return the concrete mode."""
    import keras

    concrete = resolve(mode)
    keras.config.set_dtype_policy(POLICIES[concrete])
    return concrete
