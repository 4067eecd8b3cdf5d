"""Train a tiny run under --distribute MODE in a fresh process and print its history as JSON.

    python distribute_child.py MODE RUN_DIR CORPUS EPOCHS [LOGICAL_CPUS [PRESET [DROPOUT]]]

LOGICAL_CPUS > 1 splits TensorFlow's CPU into that many logical devices first (what MirroredStrategy
mirrors over where there is no GPU); under JAX, XLA_FLAGS in the environment does that.
"""

import json
import sys

mode, run_dir, corpus, epochs = sys.argv[1:5]
logical = int(sys.argv[5]) if len(sys.argv) > 5 else 1
preset = sys.argv[6] if len(sys.argv) > 6 else "tiny"
dropout = float(sys.argv[7]) if len(sys.argv) > 7 else None  # None: the preset's
import keras  # noqa: E402

if keras.backend.backend() == "tensorflow" and logical > 1:
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical)

from estella.build.train import train  # noqa: E402

state = train(run_dir, corpus, preset, verbose=0, distribute=mode, epochs=int(epochs), steps_per_epoch=3,
              validation_steps=2, dropout=dropout)
print("HISTORY", json.dumps([[row["loss"], row["val_loss"]] for row in state["history"]]))
