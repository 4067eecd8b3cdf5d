"""`estella serve` in a child process on a free port of 127.0.0.1, for tests and benchmarks:

    with ServerProcess("runs/default/export", "--backend", "tflite") as server:
        httpx.get(server.url + "/health")
    # leaving the block sends SIGTERM (a drain) and waits for the exit

A separate process, not a thread: the server then has its own interpreter lock, as in production,
and its memory (RSS) can be read alone (with its engine process's: rss_bytes, pids).
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, export_dir, *flags, startup_timeout=60.0, env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "estella.runtime.cli", "serve", str(export_dir), "--host", "127.0.0.1",
                     "--port", str(self.port), *map(str, flags)]
        self.startup_timeout = startup_timeout
        self.env = env
        self.process = None

    def start(self):
        self.process = subprocess.Popen(self.args, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"estella serve exited with {self.process.returncode}: {self.process.stdout.read()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"estella serve did not answer /health within {self.startup_timeout} s")

    def stop(self, timeout=60.0):
        """SIGTERM (the server drains), then wait; kill if it hangs. Returns the exit code and output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            output, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        return self.process.returncode, output

    def pids(self):
        """The server's process and its children (the engine process), from Linux /proc."""
        pid, children = self.process.pid, []
        for task in os.listdir(f"/proc/{pid}/task"):  # each thread's children: the engine's was started by one
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(c) for c in f.read().split()]
        return [pid, *children]

    def rss_bytes(self):
        """The server's resident memory, its engine process's included (Linux /proc)."""
        total = 0
        for pid in self.pids():
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
        return total

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

