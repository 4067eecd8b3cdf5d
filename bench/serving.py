"""Serving speed: `estella serve` under C concurrent streaming clients, against the batching limit
(`Generator.generate_many` at B = C, in this process) and against one request at a time (C = 1).

Run as a child of the suite (`python -m estella.bench.serving EXPORT OUT.json`). For each precision
one real server runs in its own process on 127.0.0.1 (tflite, --max-batch as large as the most
clients, so C clients are one batch of C); the clients are aiohttp streams in this process (as
vLLM's serving benchmark uses: httpx spent more CPU per request than the server and measured itself),
each sending its requests one after another and reading the server-sent events as they come.
Rounds are interleaved as everywhere else: each round runs every C served, then generate_many at B = C.
The engine process's worth: a second server with --engine thread runs beside the first, and each
round measures it too at THREAD_ENGINE_CLIENTS clients; so does a third with --engine-cpus (the engine
process on a CPU of its own, the HTTP side on the others), whose clients then keep to the others too,
as clients on other machines would (where the machine has two CPUs or more). Ray Serve's overhead:
the bare server and `estella serve --replicas 1` (a local Ray cluster, one replica with the same
flags) both run, and each round measures one then the other at each C.
"""

import argparse
import asyncio
import contextlib
import json
import os
import time

import numpy as np

from .generation import PRIME, TEMPERATURE, load_weights, runtime_generate
from .stats import summary

CLIENTS = (1, 8, 32, 64)
PRECISIONS = ("int8", "float32")
# Ray Serve's overhead: one replica behind Ray's proxy against the bare server, same flags, same clients.
RAY_CLIENTS = (1, 32)
# The engine in the server's own process (--engine thread) is measured beside the default at this
# many clients (the goals'), or at the most clients below it that are measured.
THREAD_ENGINE_CLIENTS = 32
RAY_PRECISIONS = ("int8",)
RAY_START_TIMEOUT = 300.0  # s: a local Ray cluster and its replica, on a busy machine


async def client_requests(session, url, requests, chars, seed, ttft):
    """One client: `requests` streaming completions one after another; appends each one's time to
    first character (s) to ttft. Every stream must bring exactly `chars` characters."""
    for i in range(requests):
        body = {"prompt": PRIME, "max_tokens": chars, "temperature": TEMPERATURE, "seed": seed + i, "stream": True}
        t0 = time.perf_counter()
        first, got = None, 0
        async with session.post(url + "/v1/completions", json=body) as response:
            if response.status != 200:
                raise RuntimeError(f"the server answered {response.status}: {(await response.read())[:500]}")
            async for line in response.content:  # one server-sent event line at a time
                if not line.startswith(b"data: "):
                    continue
                if line.rstrip() == b"data: [DONE]":
                    break
                text = json.loads(line[6:])["choices"][0]["text"]
                if text and first is None:
                    first = time.perf_counter() - t0
                got += len(text)
        if got != chars:
            raise RuntimeError(f"a stream brought {got} characters, not {chars}")
        ttft.append(first)


def cpu_seconds(pids):
    """User + system CPU time of these processes so far (Linux /proc), to see which side is busy."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def served(url, clients, requests, chars, server_pids=None):
    """C clients at once; returns (aggregate chars/s over the whole run, [time to first character],
    {"server": CPU share, "clients": CPU share}: CPU seconds per second of the run, 1.0 = one core)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        # Open every connection first: a real client keeps its connection; TCP setup is not what is measured.
        await asyncio.gather(*(client_requests(session, url, 1, 1, 0, []) for _ in range(clients)))
        ttft = []
        cpu0 = time.process_time(), cpu_seconds(server_pids) if server_pids else 0.0
        t0 = time.perf_counter()
        await asyncio.gather(*(client_requests(session, url, requests, chars, 1000 * c, ttft) for c in range(clients)))
        seconds = time.perf_counter() - t0
        cpu = {"clients": (time.process_time() - cpu0[0]) / seconds,
               "server": (cpu_seconds(server_pids) - cpu0[1]) / seconds if server_pids else float("nan")}
    return clients * requests * chars / seconds, ttft, cpu


def percentile_ms(values, q):
    return float(np.percentile(values, q)) * 1e3


def measure_precision(export_dir, precision, clients, requests, chars, repeats, threads, log=print):
    """Served against generate_many at each C; in the same rounds, at one C (THREAD_ENGINE_CLIENTS), a
    server with its engine in a thread (--engine thread), to show what the engine process buys, and one
    with the engine process on a CPU of its own (--engine-cpus). Returns {"process": {C: case}, "thread":
    {C: case}, "pinned": {C: case}} ("pinned" empty on a machine with one CPU)."""
    from estella.runtime.generator import Generator
    from estella.serve.process import ServerProcess

    generator = Generator.load(export_dir, backend="tflite", precision=precision, num_threads=threads)
    batched = {c: runtime_generate(generator, c) for c in clients}
    for c in clients:
        batched[c](2)  # warm-up: allocation at this batch size
    thread_clients = [max([c for c in clients if c <= THREAD_ENGINE_CLIENTS], default=min(clients))]
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    engine_cpu, other_cpus = (allowed[0], set(allowed[1:])) if len(allowed) > 1 else (None, None)
    cases = [(c, "process") for c in clients] + [(c, "thread") for c in thread_clients]
    cases += [(c, "pinned") for c in thread_clients] if engine_cpu is not None else []
    rates, limit, ttfts = ({case: [] for case in cases} for _ in range(3))
    cpu = {case: {"server": [], "clients": []} for case in cases}
    flags = ["--backend", "tflite", "--precision", precision, "--threads", threads, "--max-batch", max(clients),
             "--max-queue", max(clients), "--max-chars", chars]
    with ServerProcess(export_dir, *flags) as in_process, \
            ServerProcess(export_dir, *flags, "--engine", "thread") as in_thread, \
            (ServerProcess(export_dir, *flags, "--engine-cpus", engine_cpu) if engine_cpu is not None
             else contextlib.nullcontext()) as pinned:
        servers = {"process": in_process, "thread": in_thread, "pinned": pinned}
        for c, engine in cases:
            asyncio.run(served(servers[engine].url, c, 1, min(chars, 16)))  # warm-up: the server's batch sizes
        for r in range(repeats):
            for c, engine in cases:
                server = servers[engine]
                with clients_on(other_cpus if engine == "pinned" else None):
                    rate, ttft, shares = asyncio.run(served(server.url, c, requests, chars, server.pids()))
                rates[c, engine].append(rate)
                ttfts[c, engine] += ttft
                for side, share in shares.items():
                    cpu[c, engine][side].append(share)
                # The same characters per stream, as one generate_many call of B = C streams.
                seconds, units = batched[c](requests * chars)
                limit[c, engine].append(units / seconds)
            log(f"  serving {precision}: round {r + 1}/{repeats}")

    def result(case):
        return {"served_chars_per_s": summary(rates[case]), "generate_many_chars_per_s": summary(limit[case]),
                "ttft_ms": {"p50": percentile_ms(ttfts[case], 50), "p99": percentile_ms(ttfts[case], 99),
                            "max": max(ttfts[case]) * 1e3, "n": len(ttfts[case])},
                "cpu_share": {side: summary(v)["median"] for side, v in cpu[case].items()}}

    return {engine: {str(c): result((c, e)) for c, e in cases if e == engine}
            for engine in ("process", "thread", "pinned")}


@contextlib.contextmanager
def clients_on(cpus):
    """This process (the clients) on these CPUs for a while (None: as it is)."""
    if cpus is None:
        yield
        return
    from estella.serve.cpus import keep_process_to

    before = os.sched_getaffinity(0)
    keep_process_to(cpus)
    try:
        yield
    finally:
        keep_process_to(before)


def measure_ray(export_dir, precision, clients, requests, chars, repeats, threads, log=print):
    """The bare server and `estella serve --replicas 1` (its own local Ray cluster), both running,
    measured in alternation: per C, chars/s and time to first character of each, and their ratio."""
    from estella.serve.process import ServerProcess

    flags = ["--backend", "tflite", "--precision", precision, "--threads", threads, "--max-batch", max(clients),
             "--max-queue", max(clients), "--max-chars", chars]
    rates = {(side, c): [] for side in ("bare", "ray") for c in clients}
    ttfts = {(side, c): [] for side in ("bare", "ray") for c in clients}
    with ServerProcess(export_dir, *flags) as bare, \
            ServerProcess(export_dir, *flags, "--replicas", 1, startup_timeout=RAY_START_TIMEOUT) as on_ray:
        servers = {"bare": bare, "ray": on_ray}
        for server in servers.values():
            for c in clients:
                asyncio.run(served(server.url, c, 1, min(chars, 16)))  # warm-up
        for r in range(repeats):
            for c in clients:
                for side, server in servers.items():
                    rate, ttft, _ = asyncio.run(served(server.url, c, requests, chars))
                    rates[side, c].append(rate)
                    ttfts[side, c] += ttft
            log(f"  serving on Ray {precision}: round {r + 1}/{repeats}")

    def side(name, c):
        t = ttfts[name, c]
        return {"chars_per_s": summary(rates[name, c]),
                "ttft_ms": {"p50": percentile_ms(t, 50), "p99": percentile_ms(t, 99), "max": max(t) * 1e3, "n": len(t)}}

    return {str(c): {"bare": side("bare", c), "ray": side("ray", c)} for c in clients}


def measure(export_dir, clients=CLIENTS, requests=4, chars=256, repeats=5, threads=1, ray_clients=RAY_CLIENTS,
            log=print):
    from estella.runtime.weights_format import architecture

    arch = architecture(load_weights(export_dir))
    shape = {"vocab_size": arch["vocab_size"], "cell": arch["cell"], "units": arch["units"]}
    measured = {p: measure_precision(export_dir, p, clients, requests, chars, repeats, threads, log)
                for p in PRECISIONS}
    result = {"shape": shape, "backend": "tflite", "threads": threads,
              "requests_per_client": requests, "chars_per_request": chars, "repeats": repeats,
              "precisions": {p: m["process"] for p, m in measured.items()},
              "engine_thread": {p: m["thread"] for p, m in measured.items()},
              "engine_pinned": {p: m["pinned"] for p, m in measured.items()}}
    try:
        result["ray"] = {p: measure_ray(export_dir, p, ray_clients, requests, chars, repeats, threads, log)
                         for p in RAY_PRECISIONS}
    except Exception as e:  # reported as not measured (Ray not installed, a cluster that did not start)
        result["ray"] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("export_dir")
    parser.add_argument("out")
    parser.add_argument("--clients", default=",".join(map(str, CLIENTS)))
    parser.add_argument("--requests", type=int, default=4, help="requests per client, one after another")
    parser.add_argument("--chars", type=int, default=256, help="characters per request")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ray-clients", default=",".join(map(str, RAY_CLIENTS)), help="clients of the Ray rows")
    args = parser.parse_args(argv)
    result = measure(args.export_dir, [int(c) for c in args.clients.split(",") if c], args.requests, args.chars,
                     args.repeats, args.threads, [int(c) for c in args.ray_clients.split(",") if c])
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
