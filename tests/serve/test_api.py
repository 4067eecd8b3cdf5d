"""The HTTP API of a real `estella serve` process, through the official openai client and httpx."""

import json
import math
import threading
import time

import httpx
import openai
import pytest

from estella.runtime.generator import Generator

MAX_CHARS = 10_000_000  # long enough that a stream outlives the checks on it


@pytest.fixture(scope="module")
def server(start_server):
    return start_server("--backend", "tflite", "--model-name", "tiny", "--max-chars", MAX_CHARS,
                        "--max-request-chars", MAX_CHARS)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(serve_export):
    return Generator.load(serve_export, "tflite")


def post(server, body, **kwargs):
    return httpx.post(server.url + "/v1/completions", json=body, timeout=30, **kwargs)


def test_completion_equals_generate(client, reference):
    r = client.completions.create(model="tiny", prompt="Pip", max_tokens=120, temperature=0.8, top_p=0.9, seed=7,
                                  extra_body={"top_k": 20})
    expected = reference.generate("Pip", 120, 0.8, 20, 0.9, seed=7, echo=False)
    assert r.object == "text_completion" and r.model == "tiny" and r.id.startswith("cmpl-") and r.created > 0
    assert [(c.index, c.text, c.finish_reason, c.logprobs) for c in r.choices] == [(0, expected, "length", None)]
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 120, 123)


def test_streaming_equals_whole(client, reference):
    chunks = list(client.completions.create(model="tiny", prompt="Joe", max_tokens=8000, temperature=0.6, seed=3,
                                            stream=True))
    assert len(chunks) >= 2 and all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].choices[0].finish_reason == "length"
    assert "".join(c.choices[0].text for c in chunks) == reference.generate("Joe", 8000, 0.6, seed=3, echo=False)


def test_sse_framing_and_usage(server):
    body = {"prompt": "Pip", "max_tokens": 50, "seed": 1, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    last = json.loads(events[-2][6:])
    assert last["choices"] == [] and last["usage"] == {"prompt_tokens": 3, "completion_tokens": 50, "total_tokens": 53}


def test_prompt_list_n_echo_stop(client, reference):
    r = client.completions.create(model="tiny", prompt=["Pip", "Mr. "], n=2, max_tokens=40, seed=10, echo=True)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    for i, (prime, c) in enumerate(zip(["Pip", "Pip", "Mr. ", "Mr. "], r.choices)):  # choice i: seed + i
        assert c.text == prime + reference.generate(prime, 40, seed=10 + i, echo=False)
    assert r.usage.prompt_tokens == 7 and r.usage.completion_tokens == 160  # each prompt once, not once per choice
    whole = reference.generate("Pip", 200, seed=4, echo=False)
    stop = whole[60:62]
    r = client.completions.create(model="tiny", prompt="Pip", max_tokens=200, seed=4, stop=["\x00", stop])
    assert (r.choices[0].text, r.choices[0].finish_reason) == (whole[:whole.find(stop)], "stop")


def test_logprobs(client):
    r = client.completions.create(model="tiny", prompt="Pip", max_tokens=25, seed=2, logprobs=3, echo=True)
    lp = r.choices[0].logprobs
    assert lp.tokens == list(r.choices[0].text) and len(lp.tokens) == 28
    assert lp.token_logprobs[:3] == [None] * 3 and lp.top_logprobs[:3] == [None] * 3  # the prime is given
    assert lp.text_offset == list(range(28))
    for token, logprob, top in zip(lp.tokens[3:], lp.token_logprobs[3:], lp.top_logprobs[3:]):
        assert len(top) == 3 and logprob <= 0 and sum(math.exp(v) for v in top.values()) <= 1 + 1e-6
        assert token not in top or top[token] == pytest.approx(logprob)
    streamed = list(client.completions.create(model="tiny", prompt="Pip", max_tokens=25, seed=2, logprobs=3,
                                              stream=True))
    tokens = [t for c in streamed for t in c.choices[0].logprobs.tokens]
    offsets = [o for c in streamed for o in c.choices[0].logprobs.text_offset]
    assert tokens == lp.tokens[3:] and offsets == list(range(25))
    plain = client.completions.create(model="tiny", prompt="Pip", max_tokens=25, seed=2, logprobs=3).choices[0]
    assert plain.logprobs.tokens == lp.tokens[3:] and plain.logprobs.token_logprobs == lp.token_logprobs[3:]
    assert plain.logprobs.text_offset == list(range(25))


def test_models_health_metrics_page(server):
    models = httpx.get(server.url + "/v1/models").json()
    assert models["object"] == "list"
    (model,) = models["data"]
    assert (model["id"], model["object"], model["backend"], model["precision"]) == ("tiny", "model", "tflite", "float32")
    assert model["vocab_size"] > 10 and model["state_size"] > 0
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    metrics = httpx.get(server.url + "/metrics").text
    for name in ("estella_requests_total", "estella_requests_running", "estella_requests_waiting",
                 "estella_batch_size_bucket", "estella_time_to_first_char_seconds_bucket",
                 "estella_request_latency_seconds_bucket", "estella_chars_generated_total"):
        assert name in metrics
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and "<html" in page.text.lower()


BAD_REQUESTS = [  # (body, status, code, words in the message)
    ({"prompt": "Pip", "temperature": -1}, 400, "invalid_value", "temperature must be a finite number >= 0"),
    ({"prompt": "Pip", "temperature": float("nan")}, 400, "invalid_value", "temperature must be a finite number"),
    ({"prompt": "Pip", "top_p": 0}, 400, "invalid_value", "top_p must be in (0, 1]"),
    ({"prompt": "Pip", "top_p": 1.5}, 400, "invalid_value", "top_p must be in (0, 1]"),
    ({"prompt": "Pip", "top_k": 0}, 400, "invalid_value", "top_k must be an integer >= 1"),
    ({"prompt": "Pip", "top_k": 2**63}, 400, "invalid_value", "top_k: Input should be less than or equal to "
                                                               "9223372036854775807"),
    ({"prompt": "Pip", "max_tokens": -1}, 400, "invalid_value", f"max_tokens must be an integer from 0 to {MAX_CHARS}"),
    ({"prompt": "Pip", "max_tokens": MAX_CHARS + 1}, 400, "invalid_value", "--max-chars"),
    ({"prompt": "Pip", "max_tokens": 2**64}, 400, "invalid_value", "max_tokens: Input should be less than or equal"),
    ({"prompt": "Pip", "stop": ""}, 400, "invalid_value", "stop must be a non-empty string"),
    ({"prompt": "Pip", "stop": ["a", 3]}, 400, "invalid_value", "stop: Input should be a valid string"),
    ({"prompt": "P\x00ip\x01"}, 400, "invalid_value", "prompt has characters that are not in the vocabulary: "
                                                       "['\\x00', '\\x01'] (remove them, or skip them with skip_unknown)"),
    ({"prompt": "Pip", "logprobs": -2}, 400, "invalid_value", "logprobs must be an integer from 0 to"),
    ({"prompt": "Pip", "seed": -1}, 400, "invalid_value", "seed must be an integer from 0 to 9223372036854775807"),
    ({"prompt": "Pip", "seed": 2**63}, 400, "invalid_value", "seed: Input should be less than or equal"),
    ({"prompt": "Pip", "seed": 2**63 - 1, "n": 2}, 400, "invalid_value", "seed must be an integer from 0 to "
                                                                         "9223372036854775806 (2 streams"),
    ({"prompt": 5}, 400, "invalid_value", "prompt: Input should be a valid string or a valid list, got 5"),
    ({"prompt": []}, 400, "invalid_value", "prompt: Input should be a valid string or List should have at least 1"),
    ({}, 400, "invalid_value", "prompt: Field required"),
    ({"prompt": "Pip", "stream": "yes"}, 400, "invalid_value", "stream: Input should be a valid boolean"),
    ({"prompt": "Pip", "max_tokens": 2.5}, 400, "invalid_value", "max_tokens: Input should be a valid integer"),
    ({"prompt": "Pip", "max_tokens": "5"}, 400, "invalid_value", "max_tokens: Input should be a valid integer"),
    ({"prompt": "Pip", "temperature": "hot"}, 400, "invalid_value", "temperature: Input should be a valid number"),
    ({"prompt": "Pip", "n": 0}, 400, "invalid_value", "n: Input should be greater than or equal to 1"),
    ({"prompt": "Pip", "n": 33}, 400, "invalid_value", "more than the server's batch"),
    ({"prompt": "Pip", "model": "gpt-4"}, 404, "model_not_found", "no model named 'gpt-4'"),
]


@pytest.mark.parametrize("body,status,code,words", BAD_REQUESTS, ids=[str(b)[:40] for b, *_ in BAD_REQUESTS])
def test_bad_requests(server, body, status, code, words):
    r = httpx.post(server.url + "/v1/completions", content=json.dumps(body),
                   headers={"content-type": "application/json"}, timeout=30)
    error = r.json()["error"]
    assert (r.status_code, error["code"], error["type"]) == (status, code, "invalid_request_error")
    assert words in error["message"]


def test_malformed_json_unknown_path_and_large_body(server):
    for content in (b'{"prompt": "Pip",', b"\xff\xfe", b"[1, 2]"):
        r = httpx.post(server.url + "/v1/completions", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.get(server.url + "/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = post(server, {"prompt": "a" * (2 << 20)})  # refused on its Content-Length
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: refused once 1 MiB has come
        yield b'{"prompt": "'
        for _ in range(40):
            yield b"a" * 65536
        yield b'"}'

    r = httpx.post(server.url + "/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_openai_client_sees_errors(client):
    with pytest.raises(openai.BadRequestError, match="temperature must be"):
        client.completions.create(model="tiny", prompt="Pip", temperature=-0.5)
    with pytest.raises(openai.NotFoundError, match="no model named"):
        client.completions.create(model="nope", prompt="Pip")


def test_api_key_and_cors(start_server):
    server = start_server("--backend", "numpy", "--api-key", "k1", "k2", "--cors-origin", "http://page.test")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "k1"}):
        r = post(server, {"prompt": "Pip"}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(server.url + "/v1/models").status_code == 401
    assert httpx.get(server.url + "/health").status_code == 200  # no key needed
    for key in ("k1", "k2"):
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        assert len(client.completions.create(model=client.models.list().data[0].id, prompt="Pip",
                                             max_tokens=5).choices[0].text) == 5
    preflight = httpx.options(server.url + "/v1/completions", headers={
        "Origin": "http://page.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "http://page.test"
    other = httpx.options(server.url + "/v1/completions", headers={
        "Origin": "http://evil.test", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


def running(server):
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith("estella_requests_running "):
            return float(line.split()[1])
    raise AssertionError("no estella_requests_running in /metrics")


def test_disconnect_cancels_the_stream(server):
    assert running(server) == 0
    with httpx.stream("POST", server.url + "/v1/completions", timeout=30,
                      json={"prompt": "Pip", "max_tokens": MAX_CHARS, "stream": True}) as r:
        lines = r.iter_lines()  # kept: a dropped line iterator closes the response
        next(lines)
        assert running(server) == 1
    # the connection is closed: the stream is cancelled at the next tick
    deadline = time.monotonic() + 10
    while running(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running(server) == 0
    assert 'estella_requests_total{status="499"}' in httpx.get(server.url + "/metrics").text


def test_disconnect_cancels_a_whole_completion(server):
    """A client that gives up on a (non-streaming) completion frees its slot too."""
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json={"prompt": "Pip", "max_tokens": MAX_CHARS}, timeout=0.5)
    deadline = time.monotonic() + 10
    while running(server) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running(server) == 0


def test_queue_full_answers_503(start_server):
    server = start_server("--backend", "numpy", "--max-batch", "1", "--max-queue", "0", "--max-chars", "1000000",
                          "--max-request-chars", "1000000")
    holding = threading.Event()

    def hold():
        with httpx.stream("POST", server.url + "/v1/completions", timeout=30,
                          json={"prompt": "Pip", "max_tokens": 1000000, "stream": True}) as r:
            lines = r.iter_lines()
            next(lines)
            holding.set()
            time.sleep(1.0)

    thread = threading.Thread(target=hold)
    thread.start()
    assert holding.wait(20)
    r = post(server, {"prompt": "Joe", "max_tokens": 3})
    thread.join()
    assert r.status_code == 503 and r.json()["error"]["code"] == "queue_full" and r.headers["retry-after"] == "1"


def test_one_bad_request_never_takes_the_server_down(server, client, reference):
    """The requests that killed the engine for good (top_k past int64, a JSON body nested 1,000
    deep) answer 400 in OpenAI's shape, streaming or not; the server goes on."""
    for stream in (False, True):
        r = post(server, {"prompt": "Pip", "max_tokens": 5, "top_k": 9223372036854775808, "stream": stream})
        assert r.status_code == 400 and r.json()["error"]["param"] == "top_k"
    deep = b'{"prompt": "Pip", "stop": ' + b"[" * 1000 + b"]" * 1000 + b"}"
    r = httpx.post(server.url + "/v1/completions", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == "invalid_json" and "--max-json-depth" in r.json()["error"]["message"]
    # the work a request may ask is bounded: 9,000 stop strings of 100 characters; 32 choices of 4,096
    # characters with 20 logprobs each
    r = post(server, {"prompt": "Pip", "stop": ["Pip said" * 12 + "abcd"] * 9000})
    assert r.status_code == 400 and "--max-stop" in r.json()["error"]["message"]
    r = post(server, {"prompt": "Pip", "n": 32, "logprobs": 20, "max_tokens": 4096})
    assert r.status_code == 400 and "--max-logprobs" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    r = client.completions.create(model="tiny", prompt="Pip", max_tokens=30, seed=9, extra_body={"top_k": 2**63 - 1})
    assert r.choices[0].text == reference.generate("Pip", 30, seed=9, echo=False)  # top_k past V: no cut


@pytest.fixture(scope="module")
def small_limits(start_server):
    return start_server("--backend", "numpy", "--max-stop", "2", "--max-stop-chars", "5", "--max-prompt-chars", "100",
                        "--max-request-chars", "1000", "--max-logprobs", "3", "--max-json-depth", "8",
                        "--max-body-bytes", "4096")


LIMITED = [  # (body, the flag named, the param)
    ({"prompt": "Pip", "stop": ["a", "b", "c"]}, "--max-stop", "stop"),
    ({"prompt": "Pip", "stop": "abcdef"}, "--max-stop-chars", "stop"),
    ({"prompt": "a" * 101}, "--max-prompt-chars", "prompt"),
    ({"prompt": ["Pip", "Joe"], "n": 2, "max_tokens": 251}, "--max-request-chars", "max_tokens"),
    ({"prompt": "Pip", "logprobs": 4}, "--max-logprobs", "logprobs"),
    ({"prompt": "Pip", "stop": [[[[[[[[["a"]]]]]]]]]}, "--max-json-depth", None),
]


@pytest.mark.parametrize("body,flag,param", LIMITED, ids=[flag for _, flag, _ in LIMITED])
def test_each_limit_answers_400_naming_its_flag(small_limits, body, flag, param):
    r = post(small_limits, body)
    error = r.json()["error"]
    assert r.status_code == 400 and flag in error["message"] and error["param"] == param, error


def test_limits_hold_for_chat_and_the_body(small_limits):
    r = httpx.post(small_limits.url + "/v1/chat/completions", timeout=30, json={
        "messages": [{"role": "user", "content": "Pip"}], "logprobs": True, "top_logprobs": 4})
    assert r.status_code == 400 and "--max-logprobs" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "top_logprobs"
    r = post(small_limits, {"prompt": "a" * 5000})
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]["message"]
    r = post(small_limits, {"prompt": ["Pip", "Joe"], "n": 2, "max_tokens": 250})
    assert r.status_code == 200 and len(r.json()["choices"]) == 4  # at the limits: served


def test_chat_completions_with_the_openai_client(client, reference):
    """The default template writes each message as a paragraph; the reply is what generate writes
    after that prime, with the same seed."""
    messages = [{"role": "system", "content": "Pip"}, {"role": "user", "content": "Joe said."},
                {"role": "assistant", "content": "Mr. Pip"}, {"role": "user", "content": "What"}]
    prime = "Pip\n\nJoe said.\n\nMr. Pip\n\nWhat\n\n"
    expected = reference.generate(prime, 80, 0.7, seed=11, echo=False)
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=80, temperature=0.7, seed=11)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "tiny"
    (choice,) = r.choices
    assert (choice.message.role, choice.message.content, choice.finish_reason) == ("assistant", expected, "length")
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(prime), 80)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_completion_tokens=80,
                                                 temperature=0.7, seed=11, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 80


def test_chat_stop_n_and_logprobs(client, reference):
    prime = "Pip\n\n"
    whole = reference.generate(prime, 200, seed=4, echo=False)
    stop = whole[60:62]
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Pip"}], max_tokens=200,
                                       seed=4, stop=[stop], n=2, logprobs=True, top_logprobs=2)
    first, second = r.choices
    assert (first.message.content, first.finish_reason) == (whole[:whole.find(stop)], "stop")
    assert second.message.content == reference.generate(prime, 200, seed=5, stop=stop, echo=False).removesuffix(stop)
    entries = first.logprobs.content
    assert "".join(e.token for e in entries) == first.message.content
    assert all(len(e.top_logprobs) == 2 and e.logprob <= 0 and e.bytes == list(e.token.encode()) for e in entries)


def test_chat_errors(server, client):
    with pytest.raises(openai.BadRequestError, match="role 'tool' is not in the chat template"):
        client.chat.completions.create(model="tiny", messages=[{"role": "tool", "content": "x"}])
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "\x00"}]})
    assert r.status_code == 400 and "prompt has characters that are not in the vocabulary" in r.json()["error"]["message"]


def test_a_chat_template_file(start_server, serve_export, tmp_path):
    template = tmp_path / "dialogue.json"
    template.write_text(json.dumps({"user": "Joe said, “{content}”\n", "assistant": "I said, “{content}”\n",
                                    "generation": "I said, “"}), encoding="utf-8")
    server = start_server("--backend", "numpy", "--chat-template", template)
    r = httpx.post(server.url + "/v1/chat/completions", timeout=30, json={
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Pip"}, {"type": "text", "text": "!"}]}],
        "max_tokens": 40, "seed": 2})
    prime = "Joe said, “Pip!”\nI said, “"
    assert r.json()["choices"][0]["message"]["content"] == Generator.load(serve_export, "numpy").generate(
        prime, 40, seed=2, echo=False)
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": [{"role": "system", "content": "x"}]})
    assert r.status_code == 400 and "it has user, assistant" in r.json()["error"]["message"]


def test_a_bad_chat_template_exits_2(serve_export, tmp_path, capsys):
    from estella.runtime.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text('{"user": 3}', encoding="utf-8")
    for path in (bad, tmp_path / "missing.json"):
        assert main(["serve", serve_export, "--chat-template", str(path)]) == 2
        err = capsys.readouterr().err
        assert str(path) in err and "Traceback" not in err


def test_head_docs_and_retry_after(server):
    for path in ("/health", "/v1/models", "/metrics", "/"):
        head, get = httpx.head(server.url + path), httpx.get(server.url + path)
        assert head.status_code == get.status_code == 200 and head.content == b"", path
    assert httpx.get(server.url + "/docs").status_code == 200
    schema = httpx.get(server.url + "/openapi.json").json()
    assert {"CompletionRequest", "ChatCompletionRequest"} <= set(schema["components"]["schemas"])


def test_metrics_behind_the_key(start_server):
    server = start_server("--backend", "numpy", "--api-key", "k1", "--metrics-need-key")
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert httpx.get(server.url + "/metrics", headers={"Authorization": "Bearer k1"}).status_code == 200
    assert httpx.get(server.url + "/health").status_code == 200


def closed_by_server(sock, send=b""):
    """True once the server closes the connection (recv gives b""); a 60 s socket timeout fails."""
    sock.settimeout(60)
    if send:
        sock.sendall(send)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False


def test_idle_and_slow_connections_are_closed(start_server):
    """A connection that sends nothing, or its head a byte at a time, is closed by the header
    timeout; one idle after a response, by the keep-alive timeout."""
    import socket

    server = start_server("--backend", "numpy", "--timeout-header", "1", "--timeout-keep-alive", "1")
    with socket.create_connection(("127.0.0.1", server.port)) as idle:
        assert closed_by_server(idle)
    with socket.create_connection(("127.0.0.1", server.port)) as slow:
        assert closed_by_server(slow, b"GET /health HTTP/1.1\r\nHost: x\r\n")  # the head never ends
    with socket.create_connection(("127.0.0.1", server.port)) as kept:
        kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert closed_by_server(kept)  # after its response


def test_connections_past_the_bound_are_closed(start_server):
    import socket

    server = start_server("--backend", "numpy", "--max-connections", "2", "--timeout-header", "1000")
    with socket.create_connection(("127.0.0.1", server.port)) as a, \
            socket.create_connection(("127.0.0.1", server.port)) as b:
        a.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert a.recv(4096).startswith(b"HTTP/1.1 200")  # the first two are served
        with socket.create_connection(("127.0.0.1", server.port)) as c:
            assert closed_by_server(c)  # the third is closed at once: the header timeout is 1000 s
        b.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b.recv(4096).startswith(b"HTTP/1.1 200")


def test_refused_requests_are_counted(start_server):
    server = start_server("--backend", "numpy", "--api-key", "k")
    key = {"Authorization": "Bearer k"}
    post(server, {"prompt": "Pip", "top_k": 0}, headers=key)  # refused by the engine's check
    post(server, {"prompt": 5}, headers=key)  # refused by the schema
    httpx.post(server.url + "/v1/chat/completions", json={"messages": []}, headers=key)
    post(server, {"prompt": "Pip"})  # no key
    metrics = httpx.get(server.url + "/metrics").text
    assert 'estella_requests_total{status="400"} 3.0' in metrics and 'estella_requests_total{status="401"} 1.0' in metrics
