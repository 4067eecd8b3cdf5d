"""`estella serve EXPORT --replicas N` and `serve run`'s app_builder: the flags are checked before Ray
starts; one real run starts its own local Ray cluster, answers the openai client and stops on SIGTERM."""

import json
import shutil
import socket

import openai
import pytest
from ray import serve

from estella.runtime.cli import main
from estella.runtime.errors import EstellaError
from estella.runtime.generator import Generator
from estella.serve.process import ServerProcess, free_port
from estella.serve.ray_serve import REPLICA_HEADER, app_builder, deployment_options, parse_args

START_GUARD = 240.0  # s: a local Ray cluster and its replicas start within this, even on a busy machine


@pytest.mark.parametrize("flags, message", [
    (["--replicas", "0"], "--replicas must be >= 1, got 0"),
    (["--max-replicas", "0"], "--max-replicas must be >= 1, got 0"),
    (["--replicas", "2", "--max-replicas", "3"], "exclude each other"),
    (["--min-replicas", "2"], "autoscaling needs --max-replicas"),
    (["--min-replicas", "3", "--max-replicas", "2"], "--min-replicas (3) must be <= --max-replicas (2)"),
    (["--max-replicas", "2", "--target-ongoing-requests", "0"], "--target-ongoing-requests must be > 0, got 0.0"),
    (["--replicas", "2", "--engine", "thread"], "--engine applies to the single server"),
    (["--replicas", "2", "--engine-cpus", "0"], "--engine-cpus applies to the single server"),
])
def test_ray_flag_errors_exit_2_before_ray_starts(serve_export, flags, message, capsys):
    assert main(["serve", serve_export, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("estella serve: error: ") and message in err and "Traceback" not in err


def test_a_broken_export_is_refused_before_ray_starts(serve_export, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(serve_export, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    path = next(a["files"][0]["path"] for a in manifest["artifacts"] if a.get("files"))
    (broken / path).write_bytes(b"not the model")
    assert main(["serve", str(broken), "--replicas", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("estella serve: error: ") and "Traceback" not in err


def test_deployment_options_follow_the_flags(serve_export):
    fixed, _ = parse_args([serve_export, "--replicas", "3", "--max-batch", "8", "--max-queue", "4", "--threads", "2"])
    assert deployment_options(fixed) == {"num_replicas": 3, "max_ongoing_requests": 12,
                                         "graceful_shutdown_timeout_s": 30.0, "ray_actor_options": {"num_cpus": 2}}
    auto, _ = parse_args([serve_export, "--max-replicas", "4", "--max-batch", "16"])
    assert deployment_options(auto, {"upscale_delay_s": 5})["autoscaling_config"] == {
        "min_replicas": 1, "initial_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16,
        "upscale_delay_s": 5}


def test_app_builder_takes_the_flags_of_estella_serve(serve_export):
    app = app_builder({"export_dir": serve_export, "replicas": "2", "max_batch": "8", "api_key": ["a", "b"]})
    assert isinstance(app, serve.Application)
    for args, message in [({}, "needs export_dir"),
                          ({"export_dir": serve_export, "replicas": "0"}, "--replicas must be >= 1"),
                          ({"export_dir": serve_export, "port": "80"}, "port is not an application argument"),
                          ({"export_dir": serve_export, "max_batch": "many"}, "--max-batch: invalid int value"),
                          ({"export_dir": serve_export, "colour": "red"}, "unrecognized arguments: --colour red")]:
        with pytest.raises(EstellaError, match=message):
            app_builder(args)


def test_estella_serve_replicas_starts_a_local_cluster_and_stops_on_sigterm(serve_export):
    server = ServerProcess(serve_export, "--replicas", "2", "--backend", "tflite", "--threads", "1",
                           "--model-name", "tiny", startup_timeout=START_GUARD)
    server.start()
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        raw = client.completions.with_raw_response.create(model="tiny", prompt="Pip", max_tokens=100, seed=3)
        assert raw.headers[REPLICA_HEADER]
        assert raw.parse().choices[0].text == Generator.load(serve_export, "tflite").generate(
            "Pip", 100, seed=3, echo=False)
    finally:
        code, output = server.stop(timeout=START_GUARD)
    assert code == 0, output
    assert "Traceback" not in output, output
    with pytest.raises(OSError):  # Ray's proxy is gone with the cluster
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()


def test_a_ray_address_where_no_cluster_answers_exits_2(serve_export, capsys):
    address = f"127.0.0.1:{free_port()}"
    assert main(["serve", serve_export, "--ray-address", address]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"estella serve: error: --ray-address {address}: no Ray cluster answers there")
