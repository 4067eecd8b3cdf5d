"""BENCHMARKS.md, bench.json and bench.png from the suite's results. Every number here is measured;
the text around the tables is written from them."""

import json
import os

from .stats import ratio, summary

ORIGINAL = "TF original loop (eager, stateful)"
LIMITS = {"float32": "limit float32", "int8": "limit int8"}
RUNTIME_ORDER = ("tflite float32", "tflite int8", "onnx float32", "onnx int8", "numpy float32", "savedmodel float32")
BASELINES = (ORIGINAL, "TF tutorial tf.function step")
# Issue 17's goal for stacks at batch 1: every float interpreter path within this multiple of its limit.
STACK_GOAL = {"paths": ("tflite float32", "onnx float32", "numpy float32"), "times_limit": 1.35}


def write_all(result, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "bench.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    plotted = plot(result, os.path.join(out_dir, "bench.png"))
    with open(os.path.join(out_dir, "BENCHMARKS.md"), "w", encoding="utf-8") as f:
        f.write(markdown(result, plotted))


# --- numbers --------------------------------------------------------------------------------------

def with_limit(cases, faster=min):
    """Add "limit float32" and "limit int8": the fastest bare product of each precision.

    faster is min for µs per character, max for characters per second.
    """
    cases = dict(cases)
    for precision, name in LIMITS.items():
        variants = [k for k in cases if k.startswith(name + " (")]
        if variants:
            best = faster(variants, key=lambda k: cases[k]["median"])
            cases[name] = {**cases[best], "variant": best}
    return cases


def paired_difference(a, b):
    """Median over rounds of a - b: both were measured in the same rounds, so pairs share the load."""
    return summary([x - y for x, y in zip(a["samples"], b["samples"])])


def limit_for(name):
    return LIMITS["int8"] if "int8" in name else LIMITS["float32"]


def fmt(x, digits=3):
    if x is None or x != x:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def span(s):
    return f"{fmt(s['min'])}–{fmt(s['max'])}"


def layers_words(shape):
    """"GRU 2x512" from a result's shape; one written before stacks has units as one int and no cell."""
    units = shape["units"] if isinstance(shape["units"], list) else [shape["units"]]
    layers = f"{len(units)}x{units[0]}" if len(set(units)) == 1 else "/".join(map(str, units))
    return f"{shape.get('cell', 'gru').upper()} {layers}"


def stacked(shape):
    return isinstance(shape["units"], list) and len(shape["units"]) > 1


# --- markdown -------------------------------------------------------------------------------------

def markdown(result, plotted):
    m, lines = result["machine"], []
    add = lines.append
    add("# Benchmarks\n")
    add(f"Written by `{result['command']}` on {result['finished']} (took {result['seconds'] / 60:.1f} min); "
        "the raw numbers are in [bench.json](bench.json). Do not edit: rerun `make bench`.\n")
    add(f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['memory_gib']:.0f} GiB; load average "
        f"{m['load_before']} before and {m['load_after']} after the run (the machine is shared).  ")
    add("**Versions:** " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".  ")
    s = result["settings"]
    add(f"**Method:** every figure is the median of {s['repeats']} interleaved rounds (each case once per round, "
        f"so load hits all alike), with min–max; ratios compare medians from the same run. Generation runs "
        f"with {s['threads']} thread{'s' if s['threads'] > 1 else ''} everywhere (BLAS, TensorFlow, LiteRT, ONNX "
        "Runtime): the per-core cost, on a 2-core machine that others share. The generation models have random "
        "weights at the trained shapes: speed does not depend on the values.\n")
    gen = result.get("generation", {})
    if gen:
        lines += generation_tables(gen, plotted)
    if result.get("serving"):
        lines += serving_tables(result["serving"])
    if result.get("processes"):
        lines += process_table(result["processes"])
    if result.get("c_runtime"):
        lines += c_runtime_table(result["c_runtime"])
    if result.get("training"):
        lines += training_tables(result["training"])
    if result.get("prepare"):
        lines += prepare_table(result["prepare"])
    if result.get("footprint"):
        lines += footprint_table(result["footprint"])
    lines += reading(result)
    for section, error in result.get("errors", {}).items():
        add(f"\n**Not measured: {section}.** {error}\n")
    return "\n".join(lines) + "\n"


def generation_tables(gen, plotted):
    out = ["## Generation, µs per character at batch 1\n"]
    if plotted:
        out.append("![µs per character by backend, with the limits as lines](bench.png)\n")
    out.append("The **limit** is what one character must cost at least: a bare matrix-vector product over the "
               "weight bytes a step reads (every layer's recurrent kernel, the input kernels of layers 2 and up, and "
               "the dense layer; the embedding and the first layer's input projection fold into a table lookup), "
               "in float32 and in int8. It is measured several ways and the fastest counts: numpy/BLAS "
               "in both gemv layouts and a LiteRT graph of one FULLY_CONNECTED op per kernel (XNNPACK) in float32; in int8, "
               "where numpy has no fast product (its integer matmul is a plain loop, not BLAS: see the einsum row), "
               "ONNX Runtime's MatMulInteger (MLAS) and the LiteRT graph with dynamic-range int8 weights. Each "
               "includes its library's per-call cost, which every backend pays too. Each path is compared with the "
               "limit of its precision (TensorFlow paths with float32), and with the original's loop.\n")
    for shape_name, g in gen.items():
        if "error" in g:
            out.append(f"### {shape_name}\n\nNot measured: {g['error']}\n")
            continue
        sh, pc = g["shape"], with_limit(g["per_char_us"])
        b = g["limit_bytes_per_char"]
        out.append(f"### {shape_name}: V={sh['vocab_size']} E={sh['embedding_dim']} {layers_words(sh)} "
                   f"({b['float32'] / 2**20:.1f} MiB float32, {b['int8'] / 2**20:.1f} MiB int8 read per character)\n")
        out.append("| path | µs/char | min–max | × limit | × faster than the original |")
        out.append("|---|---:|---:|---:|---:|")
        order = [*BASELINES, *RUNTIME_ORDER, *[f"bare {n}" for n in RUNTIME_ORDER],
                 *[f"bare {n} unfolded" for n in RUNTIME_ORDER], *LIMITS.values(),
                 *[k for k in pc if k.startswith("limit ") and k not in LIMITS.values()], "numpy int8 einsum (not BLAS)"]
        for name in order:
            if name not in pc:
                continue
            s = pc[name]
            limit = pc.get(limit_for(name))
            vs_limit = "1" if name in LIMITS.values() else (fmt(ratio(s, limit)) if limit else "–")
            vs_orig = fmt(ratio(pc[ORIGINAL], s)) if ORIGINAL in pc else "–"
            label = f"**{name}** = {s['variant'][len(name) + 2:-1]}" if name in LIMITS.values() else name
            out.append(f"| {label} | {fmt(s['median'])} | {span(s)} | {vs_limit} | {vs_orig} |")
        out.append("")
        if stacked(sh):
            out += stack_goal(pc)
        out += fold_table(pc)
        out += overhead_table(pc)
        out += throughput_table(g["throughput_chars_per_s"])
    return out


def stack_goal(pc):
    """The goal line for a stack: each float interpreter path's multiple of the float32 limit, met or missed."""
    limit = pc.get(LIMITS["float32"])
    paths = [n for n in STACK_GOAL["paths"] if n in pc]
    if not limit or not paths:
        return []
    goal = STACK_GOAL["times_limit"]
    parts = [f"{n} {fmt(ratio(pc[n], limit))}× ({'met' if ratio(pc[n], limit) <= goal else 'missed'})" for n in paths]
    return [f"Goal for stacks: every float interpreter path within {fmt(goal)}× the float32 limit at batch 1: "
            + ", ".join(parts) + ".\n"]


def fold_table(pc):
    rows = [n for n in RUNTIME_ORDER if f"bare {n}" in pc and f"bare {n} unfolded" in pc]
    if not rows:
        return []
    out = ["The input projection folded into the embedding (one gather from a [V, 3U] table) against the "
           "previous graphs (an embedding gather, then the [E, 3U] input kernel every character; built from "
           "the same weights for the bench only), each as a bare interpreter loop:\n",
           "| graph | folded µs/char | × limit | unfolded µs/char | × limit | unfolded ÷ folded |",
           "|---|---:|---:|---:|---:|---:|"]
    for n in rows:
        folded, unfolded = pc[f"bare {n}"], pc[f"bare {n} unfolded"]
        limit = pc.get(limit_for(n))
        x = (lambda s: fmt(ratio(s, limit)) if limit else "–")
        out.append(f"| {n} | {fmt(folded['median'])} | {x(folded)} | {fmt(unfolded['median'])} | {x(unfolded)} | "
                   f"{fmt(ratio(unfolded, folded))} |")
    out.append("")
    return out


def overhead_table(pc):
    rows = [n for n in RUNTIME_ORDER if f"bare {n}" in pc and n in pc]
    if not rows:
        return []
    out = ["Python overhead of the runtime: `Generator.generate` (checks, sampling, the loop) against a bare "
           "interpreter loop (LiteRT set_tensor/invoke/get_tensor, ONNX Runtime run_with_iobinding; state fed "
           "back, nothing else); the overhead is the median of the per-round differences:\n",
           "| backend | runtime µs/char | bare interpreter µs/char | overhead µs/char | min–max | share of the runtime |",
           "|---|---:|---:|---:|---:|---:|"]
    for n in rows:
        full, bare = pc[n], pc[f"bare {n}"]
        d = paired_difference(full, bare)
        out.append(f"| {n} | {fmt(full['median'])} | {fmt(bare['median'])} | {fmt(d['median'])} | {span(d)} | "
                   f"{100 * d['median'] / full['median']:.0f}% |")
    out.append("")
    return out


def throughput_table(tp):
    tp = {b: with_limit(cases, faster=max) for b, cases in tp.items()}
    batches = list(tp)
    last = tp[batches[-1]]
    names = [n for n in (*LIMITS.values(), *RUNTIME_ORDER) if n in last]
    out = ["Throughput, characters per second over B streams (`Generator.generate_many`; the limits are the "
           "fastest bare products over B rows):\n",
           "| path | " + " | ".join(f"B={b}" for b in batches) + f" | B={batches[-1]}: limit ÷ path |",
           "|---|" + "---:|" * (len(batches) + 1)]
    for n in names:
        cells = [fmt(tp[b][n]["median"]) for b in batches]
        label = f"{n} ({last[n]['variant'][len(n) + 2:-1]})" if n in LIMITS.values() else n
        vs = "1" if n in LIMITS.values() else fmt(last[limit_for(n)]["median"] / last[n]["median"])
        out.append(f"| {label} | " + " | ".join(cells) + f" | {vs} |")
    out.append("")
    return out


# The goals for 32 clients (issue 9).
SERVING_GOALS = {"clients": 32, "vs_generate_many": 0.70, "vs_one_at_a_time": 2.5, "ttft_p99_ms": 50}


def serving_tables(serving):
    g = SERVING_GOALS
    out = ["## Serving\n",
           "`estella serve` (tflite, its own process on 127.0.0.1, `--max-batch` = the most clients) under C "
           "concurrent streaming clients (aiohttp, in the benchmark's process), each sending its requests one after "
           "another and reading the server-sent events as they come. **served** is the aggregate characters per "
           "second over the whole run; **generate_many** is `Generator.generate_many` at B = C in the benchmark's "
           "process, in the same rounds (the batching limit); **× one at a time** compares with C = 1, the same "
           "requests served one after another. Time to first character runs from sending the request to the "
           "first chunk with text, pooled over all rounds. CPU is cores busy during the served run (1 = one "
           "core): the server's processes (its engine process's too) and the clients'. The row *engine in a "
           "thread* is a second server run with `--engine thread` (the scheduler in the HTTP process); the row "
           "*engine on a CPU of its own* a third, run with `--engine-cpus` naming the first CPU (the HTTP side "
           "on the others), whose clients then keep to the other CPUs as well, as clients on other machines "
           "would. Both are measured in the same rounds.\n"]
    for shape_name, sv in serving.items():
        if "error" in sv:
            out.append(f"### {shape_name}\n\nNot measured: {sv['error']}\n")
            continue
        out.append(f"### {shape_name}: {sv['requests_per_client']} requests of {sv['chars_per_request']} characters "
                   f"per client, {sv['repeats']} rounds, {sv['threads']} interpreter thread(s)\n")
        for precision, cases in sv["precisions"].items():
            one = cases["1"]["served_chars_per_s"] if "1" in cases else None
            out += [f"**tflite {precision}**\n",
                    "| clients | served chars/s | min–max | generate_many chars/s | served ÷ generate_many | "
                    "× one at a time | first char p50 ms | p99 ms | CPU server | CPU clients |",
                    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            out += [serving_row(clients, c, one) for clients, c in cases.items()]
            pinned = sv.get("engine_pinned", {}).get(precision, {})
            out += [serving_row(f"{clients}, engine in a thread", c, None)
                    for clients, c in sv.get("engine_thread", {}).get(precision, {}).items()]
            out += [serving_row(f"{clients}, engine on a CPU of its own", c, one) for clients, c in pinned.items()]
            for label, at in ((f"{g['clients']} clients", cases.get(str(g["clients"]))),
                              (f"{g['clients']} clients, engine on a CPU of its own", pinned.get(str(g["clients"])))):
                if at and one:
                    out.append(f"\nGoals at {label}: {goals_met(at, one, g)}.")
            out.append("")
        if "ray" in sv:
            out += ray_table(sv["ray"])
    return out


def goals_met(at, one, g):
    """What a served case makes of the goals (each value, its goal, met or missed)."""
    checks = [(ratio(at["served_chars_per_s"], at["generate_many_chars_per_s"]), g["vs_generate_many"],
               "of generate_many", True),
              (ratio(at["served_chars_per_s"], one), g["vs_one_at_a_time"], "× one at a time", True),
              (at["ttft_ms"]["p99"], g["ttft_p99_ms"], "ms p99 first character", False)]
    return "; ".join(f"{fmt(v)} {what} (goal {'≥' if high else '<'} {fmt(goal)}: "
                     f"{'met' if (v >= goal if high else v < goal) else 'missed'})" for v, goal, what, high in checks)


def serving_row(label, c, one):
    """One row of a serving table; `one` (C = 1's served rate) gives the × one at a time column."""
    served, limit, ttft = c["served_chars_per_s"], c["generate_many_chars_per_s"], c["ttft_ms"]
    return (f"| {label} | {fmt(served['median'])} | {span(served)} | {fmt(limit['median'])} | "
            f"{fmt(ratio(served, limit))} | {fmt(ratio(served, one)) if one else '–'} | "
            f"{fmt(ttft['p50'])} | {fmt(ttft['p99'])} | {fmt(c['cpu_share']['server'], 2)} | "
            f"{fmt(c['cpu_share']['clients'], 2)} |")


def ray_table(ray):
    """Ray Serve's overhead: `estella serve --replicas 1` against the bare server, measured in alternation."""
    out = ["**Ray Serve's overhead**: `estella serve --replicas 1` (a local Ray cluster, one replica with the same "
           "flags, behind Ray's proxy) against the bare server, both running, measured in alternation with the "
           "same clients.\n"]
    if "error" in ray:
        return out + [f"Not measured: {ray['error']}\n"]
    for precision, cases in ray.items():
        out += [f"tflite {precision}:\n",
                "| clients | bare chars/s | Ray chars/s | Ray ÷ bare | bare first char p50 / p99 ms | "
                "Ray first char p50 / p99 ms |", "|---:|---:|---:|---:|---:|---:|"]
        for clients, c in cases.items():
            bare, on_ray = c["bare"], c["ray"]
            out.append(f"| {clients} | {fmt(bare['chars_per_s']['median'])} | {fmt(on_ray['chars_per_s']['median'])} | "
                       f"{fmt(ratio(on_ray['chars_per_s'], bare['chars_per_s']))} | "
                       f"{fmt(bare['ttft_ms']['p50'])} / {fmt(bare['ttft_ms']['p99'])} | "
                       f"{fmt(on_ray['ttft_ms']['p50'])} / {fmt(on_ray['ttft_ms']['p99'])} |")
        out.append("")
    return out


def process_table(proc):
    out = ["## Cold start and memory\n",
           "One fresh process per run: from process start to the first generated character, and the process's "
           "peak RSS (VmHWM; ru_maxrss would carry the parent's peak across exec) after generating the rest. "
           "`keras` is the TensorFlow path (`estella sample`: import TensorFlow, rebuild the model from the "
           "run's weights).\n"]
    for shape_name, cases in proc.items():
        if "error" in cases:
            out.append(f"### {shape_name}\n\nNot measured: {cases['error']}\n")
            continue
        out += [f"### {shape_name}\n", "| process | cold start s | min–max | peak RSS MiB |", "|---|---:|---:|---:|"]
        for name, c in cases.items():
            out.append(f"| {name} | {fmt(c['cold_start_s']['median'])} | {span(c['cold_start_s'])} | "
                       f"{fmt(c['peak_rss_mib']['median'])} |")
        out.append("")
    return out


def c_runtime_table(c):
    sizes = c["sizes"]
    out = ["## The C runtime (estella-c) beside the Python runtime\n",
           f"The float32 TFLite file, sampled from the prime \"T\" (seed 0), one fresh process per run and side: "
           f"cold start to the first generated character, chars/s over {c['chars']} characters (from each side's "
           "`--stats`), peak RSS (VmHWM). Python: `estella generate --backend tflite --threads 1` (chars/s) and the "
           "probe above (cold start, memory); C: `estella-c --stream --stats`, the same text. "
           f"estella-c is {sizes['estella_c_bytes'] / 1e3:.0f} KB and links libLiteRt.so "
           f"({sizes['libLiteRt_bytes'] / 2**20:.1f} MiB), libcjson and libcrypto; it runs one thread, the compiled "
           "model's default (LiteRT 2.3's C library does not export its thread option).\n"]
    for shape_name, sides in c.items():
        if shape_name in ("sizes", "chars"):
            continue
        out += [f"### {shape_name}\n", "| runtime | cold start s | chars/s | min–max | peak RSS MiB |",
                "|---|---:|---:|---:|---:|"]
        for side, m in sides.items():
            label = "estella-c (C, LiteRT C API)" if side == "estella-c" else "estella generate (Python, LiteRT)"
            out.append(f"| {label} | {fmt(m['cold_start_s']['median'])} | {fmt(m['chars_per_s']['median'])} | "
                       f"{span(m['chars_per_s'])} | {fmt(m['peak_rss_mib']['median'])} |")
        out.append("")
    return out


def training_tables(training):
    out = ["## Training\n",
           "Steps of `fit` on the whole book, each case a few steps per round in interleaved rounds, all in one "
           "process with TensorFlow's default threads; the first step (tracing, XLA compilation) is shown apart. "
           "chars/s counts the characters of the batches (batch × sequence length).\n"]
    for preset_name, t in training.items():
        if "error" in t:
            out.append(f"### preset {preset_name}\n\nNot measured: {t['error']}\n")
            continue
        hp = t["hparams"]
        units = hp["units"] if isinstance(hp["units"], int) else ",".join(map(str, hp["units"]))  # a list since 2 layers
        out.append(f"### preset {preset_name}: {hp.get('cell', 'gru')} E={hp['embedding_dim']} U={units} seq={hp['seq_length']} "
                   f"batch={hp['batch_size']} ({t['backend']} backend)\n")
        out += ["| case | ms/step | min–max | chars/s | × original | first step s | val loss after the steps |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        original = t["cases"].get("original recipe")
        for name, c in t["cases"].items():
            vs = fmt(ratio(original["ms_per_step"], c["ms_per_step"])) if original else "–"
            loss = f"{c['val_loss_after_steps']:.3f} ({c['steps_trained']} steps)" if "val_loss_after_steps" in c else "–"
            out.append(f"| {name} | {fmt(c['ms_per_step']['median'])} | {span(c['ms_per_step'])} | "
                       f"{fmt(c['chars_per_s']['median'])} | {vs} | {fmt(c['first_step_s'])} | {loss} |")
        out.append("")
        out += [f"- {name}: {c['about']}" for name, c in t["cases"].items()]
        out.append("")
    return out


def prepare_table(prepare):
    out = ["## Preparing a corpus: `estella prepare`\n",
           "Files in, train.bin / val.bin / vocab.json / meta.json out, timed from the first read to the last "
           "write (best of the rounds; the files are in the page cache after the first). The book's curly quotes "
           "take the code-point path; the synthetic text is ASCII.\n",
           "| corpus | MB | files | vocabulary | ids | MB/s (best) | all rounds | MB per CPU-second |",
           "|---|---:|---:|---:|---|---:|---|---:|"]
    for name, p in prepare.items():
        out.append(f"| {name} | {fmt(p['mb'])} | {p['files']} | {p['vocab_size']} | {p['dtype']} | "
                   f"{fmt(p['best_mb_per_s'])} | {', '.join(fmt(x) for x in p['mb_per_s'])} | "
                   f"{fmt(p.get('mb_per_cpu_s'))} |")
    return out + [""]


def footprint_table(fp):
    out = ["## Footprint\n", "site-packages of real virtualenvs (sum of file sizes): a runtime-only install "
           "per extra against the training one.\n",
           "| install | MiB | largest packages |", "|---|---:|---|"]
    for name, f in fp.items():
        label = f"estella[{name}]" if name != "train" else "estella[train] (the dev .venv)"
        if "error" in f:
            out.append(f"| {label} | – | {f['error']} |")
            continue
        big = ", ".join(f"{p['name']} {p['mib']:.0f}" for p in f["largest"])
        out.append(f"| {label} | {f['site_packages_mib']:,.0f} | {big} |")
    out.append("")
    return out


def reading(result):
    """A few sentences from the numbers: what is fastest, how far from the limit, what training gains."""
    out = ["## Reading\n"]
    for shape_name, g in result.get("generation", {}).items():
        if "error" in g:
            continue
        pc = with_limit(g["per_char_us"])
        runtime = {n: pc[n] for n in RUNTIME_ORDER if n in pc}
        if not runtime:
            continue
        best = min(runtime, key=lambda n: runtime[n]["median"])
        gaps = {n: ratio(s, pc[limit_for(n)]) for n, s in runtime.items() if limit_for(n) in pc}
        closest = min(gaps, key=gaps.get)
        text = (f"- **{shape_name}:** the fastest path is {best} at {fmt(runtime[best]['median'])} µs/char")
        if ORIGINAL in pc:
            text += f", {fmt(ratio(pc[ORIGINAL], runtime[best]))}× faster than the original's eager loop"
        text += f". Closest to its limit: {closest} at {fmt(gaps[closest])}× the {limit_for(closest)}."
        interpreters = [n for n in gaps if f"bare {n}" in pc]
        if interpreters:
            worst = max(interpreters, key=gaps.get)
            limit = pc[limit_for(worst)]["median"]
            python = paired_difference(pc[worst], pc[f"bare {worst}"])["median"]
            graph = pc[f"bare {worst}"]["median"] - limit
            text += (f" The biggest gap among the interpreters is {worst}: {fmt(runtime[worst]['median'])} µs/char, "
                     f"{fmt(gaps[worst])}× its limit of {fmt(limit)} µs; of the difference, {fmt(python)} µs is the "
                     f"runtime's Python and {fmt(graph)} µs the graph's work beyond the bare products.")
        bare = {n: paired_difference(pc[n], pc[f"bare {n}"])["median"] for n in interpreters}
        if bare:
            text += (" The runtime's own Python costs "
                     + ", ".join(f"{fmt(v)} µs/char on {n}" for n, v in bare.items()) + ".")
        out.append(text)
    for shape_name, cases in result.get("processes", {}).items():
        tf_path = cases.get("keras (TensorFlow path)")
        runtime = {n: c for n, c in cases.items() if n in RUNTIME_ORDER and not n.startswith("savedmodel")}
        if "error" in cases or not tf_path or not runtime:
            continue
        slowest = max(runtime, key=lambda n: runtime[n]["cold_start_s"]["median"])
        heaviest = max(runtime, key=lambda n: runtime[n]["peak_rss_mib"]["median"])
        out.append(f"- **Start and memory, {shape_name}:** the runtime without TensorFlow has its first character "
                   f"within {fmt(runtime[slowest]['cold_start_s']['median'])} s (slowest: {slowest}) against "
                   f"{fmt(tf_path['cold_start_s']['median'])} s for the TensorFlow path, and peaks at "
                   f"{fmt(runtime[heaviest]['peak_rss_mib']['median'])} MiB at most ({heaviest}) against "
                   f"{fmt(tf_path['peak_rss_mib']['median'])} MiB.")
    fp = result.get("footprint", {})
    if "site_packages_mib" in fp.get("train", {}):
        sizes = [f"estella[{n}] {fmt(f['site_packages_mib'])} MiB ({fmt(fp['train']['site_packages_mib'] / f['site_packages_mib'])}× "
                 "smaller)" for n, f in fp.items() if n != "train" and "site_packages_mib" in f]
        out.append(f"- **Footprint:** against {fmt(fp['train']['site_packages_mib'])} MiB for the training install: "
                   + ", ".join(sizes) + ".")
    for preset_name, t in result.get("training", {}).items():
        if "error" in t or "original recipe" not in t["cases"]:
            continue
        cases, original = t["cases"], t["cases"]["original recipe"]["ms_per_step"]
        parts = [f"{n} {fmt(ratio(original, c['ms_per_step']))}×" for n, c in cases.items() if n != "original recipe"]
        out.append(f"- **Training, preset {preset_name}:** speed relative to the original recipe (above 1 is "
                   f"faster): " + ", ".join(parts) + ".")
    return out + [""]


# --- plot -----------------------------------------------------------------------------------------

def plot(result, path):
    gen = {k: g for k, g in result.get("generation", {}).items() if "error" not in g}
    if not gen:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(2, len(gen))
    rows = -(-len(gen) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.8 * rows), squeeze=False, sharex=True)
    for ax in axes.flat[len(gen):]:
        ax.set_visible(False)
    for ax, (shape_name, g) in zip(axes.flat, gen.items()):
        pc = with_limit(g["per_char_us"])
        names = [n for n in (*BASELINES, *RUNTIME_ORDER) if n in pc][::-1]
        med = [pc[n]["median"] for n in names]
        err = [[pc[n]["median"] - pc[n]["min"] for n in names], [pc[n]["max"] - pc[n]["median"] for n in names]]
        colors = ["tab:gray" if n in BASELINES else "tab:orange" if "int8" in n else "tab:blue" for n in names]
        ax.barh(names, med, xerr=err, color=colors, capsize=2)
        for y, m in enumerate(med):
            ax.text(m * 1.08, y + 0.32, f"{m:,.0f}", fontsize=7)
        for precision, style, y in (("float32", "-", -0.55), ("int8", "--", -0.95)):
            if LIMITS[precision] in pc:
                x = pc[LIMITS[precision]]["median"]
                ax.axvline(x, color="black", linestyle=style, linewidth=1)
                ax.text(x, y, f" {precision} limit {x:.0f} µs", fontsize=7, va="center")
        ax.set_xscale("log")
        ax.set_ylim(-1.2, len(names) - 0.5)
        ax.set_xlabel("µs per character, batch 1 (log scale; lower is faster)")
        sh = g["shape"]
        ax.set_title(f"{shape_name}: E={sh['embedding_dim']}, V={sh['vocab_size']}")
        ax.grid(axis="x", alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
