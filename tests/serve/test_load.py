"""A bounded load test on 127.0.0.1: 64 concurrent streaming clients, 4 requests each, 200
characters: no errors, every text complete (and equal to `estella generate` with its seed), and the
server's memory after the run within 10% of before."""

import asyncio
import json

import httpx

from estella.runtime.generator import Generator

CLIENTS, REQUESTS, CHARS = 64, 4, 200


async def one_client(url, client_id, results):
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        for j in range(REQUESTS):
            seed = client_id * REQUESTS + j
            text, finish = [], None
            body = {"prompt": "Pip", "max_tokens": CHARS, "temperature": 0.8, "seed": seed, "stream": True}
            async with http.stream("POST", "/v1/completions", json=body) as r:
                assert r.status_code == 200, await r.aread()
                async for line in r.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        choice = json.loads(line[6:])["choices"][0]
                        text.append(choice["text"])
                        finish = choice["finish_reason"] or finish
            results[seed] = ("".join(text), finish)


async def run_clients(url):
    results = {}
    await asyncio.gather(*(one_client(url, i, results) for i in range(CLIENTS)))
    return results


def test_64_streaming_clients(start_server, serve_export):
    server = start_server("--backend", "tflite")  # the default batch (32): half the clients wait in the queue
    rss_before = server.rss_bytes()
    results = asyncio.run(run_clients(server.url))
    rss_after = server.rss_bytes()
    assert len(results) == CLIENTS * REQUESTS
    reference = Generator.load(serve_export, "tflite")
    for seed, (text, finish) in results.items():
        assert finish == "length" and text == reference.generate("Pip", CHARS, 0.8, seed=seed, echo=False)
    assert abs(rss_after - rss_before) <= 0.10 * rss_before, (rss_before, rss_after)
    metrics = httpx.get(server.url + "/metrics").text
    assert f'estella_requests_total{{status="200"}} {float(CLIENTS * REQUESTS)}' in metrics
