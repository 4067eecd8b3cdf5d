"""The app in this process (uvicorn in a thread, real HTTP on 127.0.0.1): loading and a failing model."""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn

from estella.serve.api import create_app
from estella.serve.engine import Engine, EngineFailed
from estella.serve.process import free_port


@contextlib.contextmanager
def serving(app):
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.started
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(20)


def test_health_says_loading_until_the_model_is_loaded(serve_export):
    go, engines = threading.Event(), []

    def load():
        go.wait(20)
        engines.append(Engine.load(serve_export, "numpy"))
        return engines[0]

    with serving(create_app(load, "tiny")) as url:
        assert httpx.get(url + "/health").status_code == 503
        assert httpx.get(url + "/health").json() == {"status": "loading"}
        r = httpx.post(url + "/v1/completions", json={"prompt": "Pip"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "loading"
        go.set()
        deadline = time.monotonic() + 20
        while httpx.get(url + "/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        r = httpx.post(url + "/v1/completions", json={"prompt": "Pip", "max_tokens": 7})
        assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 7
    engines[0].shutdown()


def test_a_failing_model_answers_500_and_health_503(serve_export):
    engine = Engine.load(serve_export, "numpy", max_chars=10**6)
    calls = [0]
    step = engine.backend._step

    def failing_step(ids, state):  # the interpreter fails after a while (fault injection)
        calls[0] += 1
        if calls[0] > 50:
            raise RuntimeError("the interpreter broke")
        return step(ids, state)

    engine.backend._step = failing_step
    with serving(create_app(engine, "tiny")) as url:
        r = httpx.post(url + "/v1/completions", json={"prompt": "Pip", "max_tokens": 10**6}, timeout=20)
        assert r.status_code == 500 and "the interpreter broke" in r.json()["error"]["message"]
        assert httpx.get(url + "/health").json() == {"status": "error"}
        r = httpx.post(url + "/v1/completions", json={"prompt": "Pip"})
        assert r.status_code == 500 and r.json()["error"]["code"] == "engine_failed"
    with pytest.raises(EngineFailed, match="the interpreter broke"):
        engine.submit("Pip", 5)


def test_the_server_imports_no_tensorflow_nor_the_build_stages(serve_export):
    """What `estella serve` imports, in a fresh interpreter: the runtime, never TensorFlow or build/export."""
    code = f"""
import sys
from estella.runtime.cli import make_parser
make_parser("serve")
from estella.serve.api import create_app
from estella.serve.engine import Engine
engine = Engine.load({serve_export!r}, "tflite")
create_app(engine)
engine.shutdown()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "onnx")
             or m.startswith(("estella.build", "estella.export", "estella.bench"))))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_cli_flag_errors_exit_2(tmp_path, capsys):
    from estella.runtime.cli import main

    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 2
    assert "--max-batch must be >= 1, got 0" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0"]) == 2  # warned, then the export is missing
    err = capsys.readouterr().err
    assert "warning: binding 0.0.0.0 without --api-key" in err and "is not an export directory" in err


def test_a_model_that_cannot_load_stops_the_server_with_exit_2(serve_export, tmp_path, capsys):
    """The port opens at once; an export without the artifact asked for stops the server, whose
    error names it (exit 2, no traceback)."""
    from estella.runtime.cli import main

    manifest = json.load(open(os.path.join(serve_export, "manifest.json"), encoding="utf-8"))
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["format"] == "numpy"]
    for artifact in manifest["artifacts"]:
        for f in artifact["files"]:
            shutil.copy(os.path.join(serve_export, f["path"]), tmp_path / f["path"])
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert main(["serve", str(tmp_path), "--backend", "tflite", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "has no float32 artifact for the tflite backend" in err and "Traceback" not in err
