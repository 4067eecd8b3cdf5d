"""estella on Ray Serve, on a real local Ray cluster on 127.0.0.1 (one for the module, stopped at its
end): replicas of the export behind Ray's proxy, driven by the official openai client.

Waits are on conditions (a replica count, a first character), each with a generous bound that fails
the test rather than hang it; nothing here depends on how fast the machine is.
"""

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families
from ray import serve

from estella.runtime.generator import Generator
from estella.serve.process import free_port
from estella.serve.ray_serve import APP_NAME, REPLICA_HEADER, application, parse_args, start_local_cluster

KEY = "ray-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "tiny"
FLAGS = ("--backend", "tflite", "--threads", "1", "--model-name", MODEL, "--max-chars", "1000000",
         "--max-request-chars", "1000000")
HANG_GUARD = 180.0  # s: a condition not met by then fails the test (Ray starts a replica in seconds)


def wait_for(condition, what, timeout=HANG_GUARD):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.2)  # a polling interval, not a wait for something to happen


@pytest.fixture(scope="module")
def cluster():
    start_local_cluster(cpus=4)  # logical CPUs: two replicas of one app, up to two of another
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def deploy(export, name, route_prefix, *flags, autoscaling=None):
    args, app_options = parse_args([export, *FLAGS, *flags])
    serve.run(application(args, app_options, autoscaling=autoscaling), name=name, route_prefix=route_prefix)


def replica_ids(app):
    """The ids of the app's replica actors alive now (Ray names them SERVE_REPLICA::app#deployment#id)."""
    prefix = f"SERVE_REPLICA::{app}#{APP_NAME}#"
    return {a["name"][len(prefix):] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(prefix)}


def running_replicas(app):
    return serve.status().applications[app].deployments[APP_NAME].replica_states.get("RUNNING", 0)


TEMPLATE = {"user": "Joe said, “{content}”\n", "assistant": "I said, “{content}”\n", "generation": "I said, “"}


@pytest.fixture(scope="module")
def two(cluster, serve_export, tmp_path_factory):
    """The app with two replicas at /, behind an API key (/metrics too), with a chat template file."""
    template = tmp_path_factory.mktemp("chat") / "dialogue.json"
    template.write_text(json.dumps(TEMPLATE), encoding="utf-8")
    deploy(serve_export, "two", "/", "--replicas", "2", "--api-key", KEY, "--metrics-need-key",
           "--chat-template", str(template))
    return cluster


@pytest.fixture(scope="module")
def client(two):
    return openai.OpenAI(base_url=two + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def reference(serve_export):
    return Generator.load(serve_export, "tflite")


def completion(client, seed, stream, chars=150):
    """(the replica that answered, the text) of one seeded completion."""
    raw = client.completions.with_raw_response.create(model=MODEL, prompt="Pip", max_tokens=chars, temperature=0.8,
                                                       seed=seed, stream=stream)
    result = raw.parse()
    text = "".join(c.choices[0].text for c in result) if stream else result.choices[0].text
    return raw.headers[REPLICA_HEADER], text


def test_two_replicas_answer_the_openai_client_with_the_text_of_generate(client, reference):
    served = {}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for round_ in range(10):  # Ray spreads concurrent requests; both replicas answer within a few rounds
            seeds = range(8 * round_, 8 * round_ + 8)
            for seed, (replica, text) in zip(seeds, pool.map(lambda s: completion(client, s, s % 2 == 0), seeds)):
                assert text == reference.generate("Pip", 150, 0.8, seed=seed, echo=False), (seed, replica)
                served.setdefault(replica, []).append(seed)
            if len(served) == 2:
                break
    assert set(served) == replica_ids("two"), served


def chat(client, seed, stream):
    """(the replica that answered, the reply) of one seeded chat completion."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Pip"}, {"role": "assistant", "content": "Joe"},
                               {"role": "user", "content": "Biddy"}], max_tokens=80, temperature=0.7, seed=seed,
        stream=stream)
    result = raw.parse()
    reply = "".join(c.choices[0].delta.content or "" for c in result if c.choices) if stream else \
        result.choices[0].message.content
    return raw.headers[REPLICA_HEADER], reply


def test_two_replicas_chat_with_the_openai_client_in_the_template_of_the_replicas(client, reference):
    prime = "Joe said, “Pip”\nI said, “Joe”\nJoe said, “Biddy”\nI said, “"
    served = set()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for round_ in range(10):
            seeds = range(8 * round_, 8 * round_ + 8)
            for seed, (replica, reply) in zip(seeds, pool.map(lambda s: chat(client, s, s % 2 == 1), seeds)):
                assert reply == reference.generate(prime, 80, 0.7, seed=seed, echo=False), (seed, replica)
                served.add(replica)
            if len(served) == 2:
                break
    assert served == replica_ids("two")


def test_the_same_errors_health_and_metrics_through_ray(two, client):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=two + "/v1", api_key="wrong", max_retries=0).completions.create(
            model=MODEL, prompt="Pip", max_tokens=5)
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=MODEL, prompt="Pip", max_tokens=-1)
    assert bad.value.body["code"] == "invalid_value" and "max_tokens" in bad.value.body["message"]
    with pytest.raises(openai.NotFoundError) as unknown:
        client.completions.create(model="other", prompt="Pip", max_tokens=5)
    assert unknown.value.body["code"] == "model_not_found"
    r = httpx.get(two + "/health", timeout=30)
    assert r.status_code == 200 and r.json() == {"status": "ok"} and r.headers[REPLICA_HEADER] in replica_ids("two")
    # /metrics asks for the key as the app says (--metrics-need-key) and, whichever replica answers
    # it, holds every replica's series, each labelled with its replica.
    assert httpx.get(two + "/metrics", timeout=30).status_code == 401
    metrics = httpx.get(two + "/metrics", headers=AUTH, timeout=30)
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    running = set(re.findall(r'^estella_requests_running\{replica="(\w+)"\} ', metrics.text, re.M))
    assert running == replica_ids("two")
    assert re.search(r'^estella_requests_total\{replica="\w+",status="400"\} [1-9]', metrics.text, re.M)


def metric_sum(url, sample, **labels):
    """The sum over every replica of a sample of /metrics (with these labels)."""
    families = text_string_to_metric_families(httpx.get(url + "/metrics", headers=AUTH, timeout=30).text)
    return sum(s.value for f in families for s in f.samples
               if s.name == sample and labels.items() <= s.labels.items())


def test_a_client_that_leaves_is_cancelled_on_its_replica(two):
    left = metric_sum(two, "estella_requests_total", status="499")
    with httpx.stream("POST", two + "/v1/completions", headers=AUTH, timeout=30,
                      json={"model": MODEL, "prompt": "Pip", "max_tokens": 1_000_000, "stream": True}) as r:
        assert r.status_code == 200
        next(r.iter_lines())  # the first event: the stream runs on its replica
    # Ray's proxy cancels the request on the replica, whose engine drops the stream at its next step.
    wait_for(lambda: metric_sum(two, "estella_requests_running") == 0
             and metric_sum(two, "estella_requests_total", status="499") == left + 1,
             "the stream leaves the batch, counted as 499 (the client left)")


def test_a_killed_replica_ends_its_requests_with_an_error_the_others_finish_and_ray_brings_it_back(
        two, client, reference):
    chars, wave, waves = 200_000, 8, 4  # long enough to be running when the replica is killed: checked below
    streams, threads = [], []

    def run(i):
        s = streams[i]
        try:
            raw = client.completions.with_raw_response.create(model=MODEL, prompt="Pip", max_tokens=chars,
                                                               temperature=0.8, seed=100 + i, stream=True)
            s["replica"] = raw.headers[REPLICA_HEADER]
            for chunk in raw.parse():
                s["text"].append(chunk.choices[0].text)
                s["finish"] = chunk.choices[0].finish_reason or s["finish"]
                s["first"].set()
        except openai.APIError as e:
            s["error"] = e
        finally:
            s["first"].set()

    # Ray's router picks the less busy of two replicas it samples, from its own view of their queues: a
    # wave of concurrent requests can all land on one. Waves are added (at most `waves`) until both serve.
    for _ in range(waves):
        for _ in range(wave):
            streams.append({"replica": None, "text": [], "finish": None, "error": None, "first": threading.Event()})
            threads.append(threading.Thread(target=run, args=(len(streams) - 1,), daemon=True))
            threads[-1].start()
        wait_for(lambda: all(s["first"].is_set() for s in streams), "every stream has its first characters")
        if len({s["replica"] for s in streams}) == 2:
            break
    n = len(streams)
    by_replica = {}
    for i, s in enumerate(streams):
        assert s["error"] is None, s["error"]
        by_replica.setdefault(s["replica"], []).append(i)
    assert len(by_replica) == 2, f"Ray routed all {n} concurrent streams to one replica: {by_replica}"
    victim, doomed = next(iter(by_replica.items()))
    running = [i for i in doomed if streams[i]["finish"] is None]
    assert running, "the streams finished before the kill: make them longer"
    actor = ray.get_actor(f"SERVE_REPLICA::two#{APP_NAME}#{victim}", namespace="serve")
    ray.kill(actor, no_restart=True)
    for t in threads:
        t.join(HANG_GUARD)
        assert not t.is_alive(), "a stream neither ended nor failed"

    expected = reference.generate_many(["Pip"] * n, chars, 0.8, seed=100, echo=False)
    for i, s in enumerate(streams):
        if i in running:  # cut by the kill: a clear error, raised by the openai client
            assert s["error"] is not None and s["error"].body["code"] == "replica_lost", (i, s["error"])
            assert "".join(s["text"]) == expected[i][:len("".join(s["text"]))]  # what came was right
        else:  # the other replica's streams, unaffected
            assert s["error"] is None and s["finish"] == "length", (i, s["error"])
            assert "".join(s["text"]) == expected[i]

    def replaced():
        ids = replica_ids("two")
        return len(ids) == 2 and victim not in ids and running_replicas("two") == 2

    wait_for(replaced, "Ray replaces the killed replica")
    (new,) = replica_ids("two") - set(by_replica)
    # Ray's router may not have heard of the death yet: a 502 replica_lost is retried (the client's default).
    retrying = client.with_options(max_retries=3)
    wait_for(lambda: completion(retrying, 7, False)[0] == new, "the new replica answers")
    assert completion(retrying, 7, True)[1] == reference.generate("Pip", 150, 0.8, seed=7, echo=False)


def test_serve_run_deploys_the_app_builder_with_the_flags_of_estella_serve(cluster, serve_export, reference):
    """Ray's own `serve run` on the running cluster, as the README shows it."""
    serve_cli = os.path.join(os.path.dirname(sys.executable), "serve")
    cmd = [serve_cli, "run", "--non-blocking", "--address", ray.get_runtime_context().gcs_address,
           "--name", "cli", "--route-prefix", "/cli", "estella.serve.ray_serve:app_builder",
           f"export_dir={serve_export}", "backend=tflite", "threads=1", f"model_name={MODEL}", "max_chars=500"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        client = openai.OpenAI(base_url=cluster + "/cli/v1", api_key="unused", max_retries=0)
        assert completion(client, 5, True)[1] == reference.generate("Pip", 150, 0.8, seed=5, echo=False)
        with pytest.raises(openai.BadRequestError, match="from 0 to 500"):  # max_chars=500 reached the replica
            client.completions.create(model=MODEL, prompt="Pip", max_tokens=501)
    finally:
        serve.delete("cli")


# metrics_interval_s is deprecated for environment variables that must be set before Ray starts; it works in 2.60.
@pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field in AutoscalingConfig is deprecated")
def test_autoscaling_goes_from_one_replica_to_two_under_load(cluster, serve_export):
    # A low target (one request per replica) and Ray's reaction times shortened for the test.
    deploy(serve_export, "auto", "/auto", "--max-replicas", "2", "--target-ongoing-requests", "1",
           autoscaling={"upscale_delay_s": 0, "metrics_interval_s": 0.5, "look_back_period_s": 1})
    try:
        assert running_replicas("auto") == 1 and len(replica_ids("auto")) == 1
        first = replica_ids("auto").pop()
        client = openai.OpenAI(base_url=cluster + "/auto/v1", api_key="unused", max_retries=0)
        stop, served = threading.Event(), set()

        def load(seed):
            while not stop.is_set():
                replica, text = completion(client, seed, True, chars=20_000)
                assert len(text) == 20_000
                served.add(replica)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            clients = [pool.submit(load, seed) for seed in range(4)]
            try:
                wait_for(lambda: running_replicas("auto") == 2 or any(c.done() for c in clients),
                         "a second replica under load")
                wait_for(lambda: served - {first} or any(c.done() for c in clients),
                         "the second replica answers")
            finally:
                stop.set()
            for c in clients:
                c.result()  # a client's failure is raised here
        assert running_replicas("auto") == 2 and len(served) == 2
    finally:
        serve.delete("auto")
