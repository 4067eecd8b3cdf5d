"""Prepare SOURCE into DATA_DIR and train RUN_DIR for 20 steps of the tiny preset; print peak RSS (VmHWM, kB).

Run in its own process by test_prepared_data.py, so that the peak belongs to this work alone.
"""

import sys

from estella.build.prepare import prepare
from estella.build.train import train


def peak_rss_kb():
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith("VmHWM:")))


if __name__ == "__main__":
    source, data_dir, run_dir = sys.argv[1:4]
    prepare([source], data_dir, log=lambda *_: None)
    train(run_dir, None, "tiny", verbose=0, data_dir=data_dir, epochs=1, steps_per_epoch=20, validation_steps=2)
    print("VmHWM", peak_rss_kb())
