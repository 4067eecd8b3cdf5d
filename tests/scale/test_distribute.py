"""--distribute: data-parallel training on tf.distribute and keras.distribution, on CPU devices."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.tensorflow
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distribute_child.py")


def run_child(mode, run_dir, corpus, epochs, logical=1, env=None, model=("tiny",)):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
    result = subprocess.run([sys.executable, CHILD, mode, str(run_dir), corpus, str(epochs), str(logical), *model],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.array(json.loads(result.stdout.split("HISTORY")[-1]))


def test_mirrored_over_two_cpu_devices_matches_one_device_and_resumes(corpus_slice, tmp_path):
    single = run_child("none", tmp_path / "single", corpus_slice, 2)
    mirrored = run_child("mirrored", tmp_path / "mirrored", corpus_slice, 2, logical=2)
    print("single", single.tolist(), "mirrored", mirrored.tolist())
    np.testing.assert_allclose(mirrored, single, rtol=1e-4)
    with open(tmp_path / "mirrored" / "config.json") as f:
        assert json.load(f)["hparams"]["batch_size"] == 16  # the global batch, split over the replicas
    resumed = run_child("mirrored", tmp_path / "mirrored", corpus_slice, 3, logical=2)
    assert len(resumed) == 3 and np.array_equal(resumed[:2], mirrored)


def test_a_stacked_lstm_mirrored_over_two_cpu_devices_matches_one_device(corpus_slice, tmp_path):
    """Two LSTM layers, without dropout: each replica draws its own dropout masks, which one device
    drawing for the whole batch does not reproduce."""
    model = ("tiny-lstm", "0")
    single = run_child("none", tmp_path / "single", corpus_slice, 2, model=model)
    mirrored = run_child("mirrored", tmp_path / "mirrored", corpus_slice, 2, logical=2, model=model)
    print("single", single.tolist(), "mirrored", mirrored.tolist())
    np.testing.assert_allclose(mirrored, single, rtol=1e-4)


def test_jax_data_parallel_over_two_devices_matches_one_device(corpus_slice, tmp_path):
    pytest.importorskip("jax")
    jax_env = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    single = run_child("none", tmp_path / "single", corpus_slice, 1, env=jax_env)
    parallel = run_child("mirrored", tmp_path / "parallel", corpus_slice, 1,
                         env=dict(jax_env, XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    print("single", single.tolist(), "data parallel", parallel.tolist())
    np.testing.assert_allclose(parallel, single, rtol=1e-4)


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_leave_one_run_that_exports(corpus_slice, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    runs = [tmp_path / "chief-run", tmp_path / "worker-run"]  # each names its own: only the chief's appears
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(tf_config))
        cmd = [sys.executable, "-m", "estella.runtime.cli", "train", str(runs[index]), "--preset", "tiny",
               "--corpus", corpus_slice, "--distribute", "multi-worker", "--epochs", "1", "--steps-per-epoch", "3",
               "--validation-steps", "2", "--quiet"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert not runs[1].exists()
    names = set(os.listdir(runs[0]))
    assert {"config.json", "vocab.json", "best.weights.h5", "state.json", "history.csv"} <= names
    export = subprocess.run([sys.executable, "-m", "estella.runtime.cli", "export", str(runs[0])],
                            capture_output=True, text=True, timeout=600)
    assert export.returncode == 0, export.stderr[-3000:]
    assert (runs[0] / "export" / "manifest.json").exists()
