"""Data-parallel training: --distribute none|mirrored|multi-worker, on each backend's own engine.

TensorFlow: tf.distribute.MirroredStrategy (every GPU of one machine, or the logical devices a
test makes) and MultiWorkerMirroredStrategy (several machines, described by TF_CONFIG). The model,
its optimizer and Keras' dataset are made inside the strategy's scope; Keras splits each global
batch of --batch-size windows over the replicas and all-reduces the gradients.

JAX: keras.distribution.DataParallel over every device, after jax.distributed.initialize when
several processes take part (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or what
JAX detects on SLURM / Open MPI).

Only the chief (TF_CONFIG's "chief", else worker 0; JAX process 0) writes the run directory.
"""

import contextlib
import json
import os
import shutil
import tempfile

from .errors import RunError

MODES = ("none", "mirrored", "multi-worker")


class Distribution:
    def __init__(self, mode, strategy=None, is_chief=True, replicas=1):
        self.mode, self.strategy, self.is_chief, self.replicas = mode, strategy, is_chief, replicas

    def scope(self):
        """Where the model and optimizer must be made (and loaded) for the strategy to own them."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    @contextlib.contextmanager
    def fitting(self, model):
        """Around model.fit. Keras 3.15's fit fails under MultiWorkerMirroredStrategy before the first
        step: its optional symbolic build all-reduces the first (integer) input batch and TensorFlow
        refuses (keras-team/keras#20585). Built and compiled here already, the model does not need
        that build; with no strategy of its own, Keras skips it and takes the strategy from the scope
        it is fitted in, which distributes the data and the steps as before."""
        if self.mode != "multi-worker" or self.strategy is None:
            yield
            return
        from keras.src.backend.tensorflow import trainer as tf_trainer

        own, model._distribute_strategy = model._distribute_strategy, None
        reduce = tf_trainer.reduce_per_replica
        tf_trainer.reduce_per_replica = _mean_scalars_on_no_axis(reduce)
        try:
            with self.strategy.scope():
                if not model.optimizer.built:  # in the cross-replica scope, not inside a step
                    model.optimizer.build(model.trainable_variables)
                yield
        finally:
            model._distribute_strategy = own
            tf_trainer.reduce_per_replica = reduce

    def checkpoint_dir(self, run_dir):
        """Where this process' checkpoints go. Saving a Keras model under MultiWorkerMirroredStrategy
        runs collective ops, so every worker saves; the others save to a scratch folder that
        `close` removes (TensorFlow's multi-worker pattern), and the run directory is the chief's."""
        if self.is_chief:
            return run_dir
        self.scratch = tempfile.mkdtemp(prefix="estella-worker-")
        return self.scratch

    def close(self):
        if getattr(self, "scratch", None):
            shutil.rmtree(self.scratch, ignore_errors=True)

    def describe(self):
        return "none" if self.mode == "none" else f"{self.mode} ({self.replicas} replicas)"


def _mean_scalars_on_no_axis(reduce_per_replica):
    """Keras 3.15 averages each step's logs over the workers with strategy.reduce("MEAN", v, axis=0),
    which a scalar loss has not: TensorFlow refuses it. Scalars are averaged with axis=None."""
    from keras.src import tree

    def reduce(values, strategy, reduction="auto"):
        def one(v):
            local = strategy.experimental_local_results(v)[0]  # one local replica: a plain tensor
            if reduction in ("auto", "mean") and getattr(local, "shape", None) is not None and local.shape.rank == 0:
                return strategy.reduce("MEAN", v, axis=None)
            return reduce_per_replica(v, strategy, reduction)
        return tree.map_structure(one, values)

    return reduce


def setup(mode: str) -> Distribution:
    """Start the engine for `mode`; call before TensorFlow or JAX run anything else in the process."""
    if mode not in MODES:
        raise RunError(f"--distribute must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "none":
        return Distribution(mode)
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow(mode)
    if backend == "jax":
        return _jax(mode)
    raise RunError(f"--distribute {mode} needs the tensorflow or jax backend, not {backend}")


def _tensorflow(mode):
    import tensorflow as tf

    if mode == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        return Distribution(mode, strategy, True, strategy.num_replicas_in_sync)
    task = _tf_config_task()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    cluster = json.loads(os.environ["TF_CONFIG"])["cluster"]
    chief = task["type"] == "chief" or ("chief" not in cluster and task["type"] == "worker" and task["index"] == 0)
    return Distribution(mode, strategy, chief, strategy.num_replicas_in_sync)


def _tf_config_task():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise RunError("--distribute multi-worker needs TF_CONFIG, e.g. "
                       '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(raw)
        task = config["task"]
        if task["type"] not in config["cluster"] or not 0 <= int(task["index"]) < len(config["cluster"][task["type"]]):
            raise ValueError(f"task {task} is not in the cluster")
        return {"type": task["type"], "index": int(task["index"])}
    except (ValueError, KeyError, TypeError) as e:
        raise RunError(f"TF_CONFIG is not a valid cluster description: {e}") from None


def _jax(mode):
    import jax
    import keras

    if mode == "multi-worker":
        env = {k: os.environ.get(k) for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID")}
        jax.distributed.initialize(num_processes=int(env["JAX_NUM_PROCESSES"]) if env["JAX_NUM_PROCESSES"] else None,
                                   process_id=int(env["JAX_PROCESS_ID"]) if env["JAX_PROCESS_ID"] else None)
    devices = jax.devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return Distribution(mode, None, jax.process_index() == 0, len(devices))
