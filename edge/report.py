"""EDGE.md from what edge/run.sh collected: per emulated CPU model, each device virtualenv's rows.

    python edge/report.py OUT_DIR [OUT_DIR...] EDGE.md

One OUT_DIR per model (edge/run.sh on that model's fixture): `make edge` runs a one-layer GRU and a
stacked LSTM, and EDGE.md has each one's tables.

Stdlib only. The pass/fail of a row is estella.runtime.parity's check, made on the device; this
file only lays out its numbers. Exit status 1 when a row failed or did not run, unless it is one of
KNOWN_FAILURES (found by this proof, outside estella), which must still fail.
"""

import json
import os
import sys

CPU_TITLES = {"cortex-a72": "Cortex-A72 (Raspberry Pi 4 class)", "cortex-a76": "Cortex-A76 (Raspberry Pi 5 class)"}
VENV_TITLES = {"tflite": "`estella[tflite]`", "onnx": "`estella[onnx]`",
               "tflite-runtime": "tflite-runtime 2.14 + numpy<2 + `estella` (no extra)",
               "rootfs": "the whole root filesystem (Debian minbase, python3, the three virtualenvs, estella-c and "
                         "its build packages)"}
# What qemu's CPU models are not: said next to their table, so nobody reads more into it.
CPU_NOTES = {"cortex-a72": "qemu's cortex-a72 has the crypto extensions (aes, pmull, sha1, sha2) that the Pi 4's "
                           "BCM2711 lacks."}
INTERPRETERS = {"ai_edge_litert": ("LiteRT", "ai-edge-litert"), "tflite_runtime": ("tflite-runtime", "tflite-runtime"),
                "onnx": ("ONNX Runtime", "onnxruntime"), "numpy": ("numpy backend", "numpy")}


def read_tsv(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


# Rows that fail for a reason outside estella, found by this proof: listed in EDGE.md as failures with
# the reason, and expected to fail (the run fails if one of them starts passing, so the list stays true).
KNOWN_FAILURES = {
    ("cortex-a76", "tflite-runtime", "tflite:int8"):
        "tflite-runtime 2.14's int8 (dynamic-range) step crashes with SIGSEGV in invoke() once the "
        "interpreter is resized to more than one stream, on every emulated CPU with the dot-product "
        "extension (cortex-a76, neoverse-n1, max; not cortex-a72 or a64fx), with or without the ARM "
        "cpuinfo and with one thread; batch 1 runs. LiteRT 2.3 runs the same file on the same CPU. "
        "Whether a real Pi 5 crashes too (or qemu 7.2 emulates an instruction wrongly) is not known.",
}


def load_result(path, missing):
    """PATH.json as the device wrote it, or `missing` with a failure quoting the last line of PATH.log."""
    try:
        with open(path + ".json", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        try:
            with open(path + ".log", encoding="utf-8", errors="replace") as f:
                tail = [line.strip() for line in f if line.strip()][-1:]
        except OSError:
            tail = []
        return {**missing, "failures": [f"did not run: {' '.join(tail) or 'no output'}"]}


def load_row(out_dir, cpu, venv, row):
    """The device's JSON for one row, or a failure that quotes the last line of its stderr."""
    return load_result(os.path.join(out_dir, cpu, venv, row.replace(":", "-")), {"interpreter": None, "measures": None})


def collect(out_dir):
    """[(cpu, venv, row, result)] in the order they ran."""
    return [(cpu, venv, row, load_row(out_dir, cpu, venv, row))
            for cpu, venv, row in read_tsv(os.path.join(out_dir, "rows.tsv"))]


def fmt(x):
    return f"{x:.1e}" if x < 1e-2 else f"{x:.3f}"


def row_cells(row, result):
    backend, precision = row.split(":")
    name, package = INTERPRETERS.get(result["interpreter"] or backend, (backend, backend))
    version = result.get("versions", {}).get(package, "")
    m = result["measures"]
    label = " ".join(x for x in (name, version, precision) if x)
    if m is None:
        return [label, "", "", "", ""]
    one = max(m["zero_dlogits"], m["random_dlogits"]), max(m["zero_dstate"], m["random_dstate"])
    if precision == "float32":
        def same(n):
            return "identical" if n == m["steps"] else f"{n}/{m['steps']} chars"
        return [label, f"{fmt(one[0])} / {fmt(one[1])}", f"{fmt(m['text_dlogits'])} / {fmt(m['text_dstate'])}",
                f"{m['top1']:.0%}", f"{same(m['greedy_prefix'])} / {same(m['sampled_prefix'])}"]
    return [label, f"{fmt(one[0])} ({one[0] / m['one_step_range']:.1%} of range)",
            f"{fmt(m['text_dlogits'])} ({m['text_dlogits'] / m['text_range']:.1%} of range)",
            f"{m['top1']:.1%}", "not compared (int8)"]


def verdict(key, result):
    """(cell, problem): problem is None when the row is as expected (passes, or is a known failure that fails)."""
    failures = "; ".join(result["failures"])
    if key in KNOWN_FAILURES:
        if failures:
            return f"FAIL (known, note {list(KNOWN_FAILURES).index(key) + 1}): {failures}", None
        return "pass, but listed as a known failure", "a known failure passes: take it off KNOWN_FAILURES"
    return ("pass", None) if not failures else (f"FAIL: {failures}", failures)


def load_c_runtime(out_dir, cpu):
    """estella-c's JSON on one CPU (edge/device_c_runtime.py), or a failure quoting its stderr."""
    return load_result(os.path.join(out_dir, cpu, "c-runtime"), {"cases": []})


def c_runtime_section(out_dir, cpus, name=None):
    """(lines, problems): one row per CPU for the C runtime, whose texts must equal the Python runtime's."""
    lines = ["## The C runtime (estella-c)" + (f": {name}" if name else ""), "",
             "runtime/c, cross-built with gcc-aarch64-linux-gnu against this root filesystem and the aarch64",
             "libLiteRt.so of the `estella[tflite]` virtualenv, runs in the chroot beside that virtualenv's Python",
             "runtime on the same emulated CPU (with /sys mounted: the compiled model's XNNPACK reads it). Each",
             "text must be the same bytes as `estella generate ... --backend tflite` writes there, and each",
             "refusal the same message and exit code 2. The texts are compared on the device, not with the",
             "host's: aarch64 LiteRT kernels and numpy's aarch64 exp round differently from x86-64.", "",
             "| CPU | binary | texts equal | refusals equal | result |", "|---|---|---|---|---|"]
    problems = []
    for cpu in cpus:
        result = load_c_runtime(out_dir, cpu)
        texts = [c for c in result["cases"] if not c.get("refusal")]
        refusals = [c for c in result["cases"] if c.get("refusal")]
        failures = "; ".join(result["failures"])
        if failures or not texts:
            problems.append(f"{name + ', ' if name else ''}{cpu} estella-c: {failures or 'no texts compared'}")
        size = f"{result['binary_bytes'] / 1e3:.0f} KB" if "binary_bytes" in result else ""
        lines.append(f"| {CPU_TITLES.get(cpu, cpu)} | {size} | {sum(c['equal'] for c in texts)} of {len(texts)} | "
                     f"{sum(c['equal'] for c in refusals)} of {len(refusals)} | "
                     f"{'FAIL: ' + (failures or 'no texts') if failures or not texts else 'pass'} |")
    cases = next((load_c_runtime(out_dir, cpu)["cases"] for cpu in cpus if load_c_runtime(out_dir, cpu)["cases"]), [])
    if cases:
        lines += ["", "Texts: " + "; ".join(f"`{c['flags']}`" for c in cases if not c.get("refusal")) + ".",
                  "Refusals: " + "; ".join(f"`{c['flags']}`" for c in cases if c.get("refusal")) + "."]
    return lines + [""], problems


def model_words(model):
    """V, E and the recurrent layers: "V=84, E=64, LSTM 2x256 (state 1024)"; a row of the previous
    version, before the model family, has units as one int and no cell."""
    units = model["units"] if isinstance(model["units"], list) else [model["units"]]
    layers = f"{len(units)}x{units[0]}" if len(set(units)) == 1 else "/".join(map(str, units))
    state = f" (state {model['state_size']})" if "state_size" in model else ""
    return (f"V={model['vocab_size']}, E={model['embedding_dim']}, {model.get('cell', 'gru').upper()} "
            f"{layers}{state}")


def first_device(runs):
    return next((r for _, _, _, r in runs if "hwcaps" in r), {})


def render(out_dirs):
    """(EDGE.md's text, [unexpected results]): a failure not known, or a known failure that passes.
    out_dirs: edge/run.sh's folders, one per model (a single folder is one model)."""
    out_dirs = [out_dirs] if isinstance(out_dirs, str) else list(out_dirs)
    models = [collect(out_dir) for out_dir in out_dirs]
    system = dict(read_tsv(os.path.join(out_dirs[0], "system.tsv")))
    sizes = dict(read_tsv(os.path.join(out_dirs[0], "sizes.tsv")))
    steps = first_device(models[0]).get("steps", "?")
    names = [model_words(first_device(runs)["model"]) if first_device(runs) else "?" for runs in models]
    model = f"a model of {names[0]}" if len(names) == 1 else "models of " + " and of ".join(names)
    lines = [
        "# Edge proof: the runtime on emulated aarch64", "",
        "Written by `make edge` (edge/report.py); do not edit by hand. The TensorFlow-free runtime runs in a",
        f"Debian {system.get('debian', '?')} arm64 root filesystem under {system.get('qemu', 'qemu')} (user mode,",
        "`QEMU_CPU` set to the core), in three virtualenvs installed there by the device's own pip from aarch64",
        "cp311 wheels. Every row runs estella.runtime.parity in its own process against the Keras model's",
        f"record made on the x86-64 host and stored with the fixture ({model} with fan-in random",
        f"weights over the book's characters): float32 within 1e-4 on single steps and along {steps} fed-back",
        "steps, identical greedy and seeded text; int8 top-1 >= 95% and |Δ logits| <= 2% of the reference's",
        "logit range (int8 text is not compared across machines: int8 kernels differ by CPU features).",
        "Emulated time says nothing about a device's speed, so none is reported.", "",
        "## Device virtualenvs", "", "| virtualenv | installed size |", "|---|---|"]
    for venv, size in sizes.items():
        lines.append(f"| {VENV_TITLES.get(venv, venv)} | {int(size) / 1e6:.0f} MB |")
    lines.append("")
    problems, passed = [], 0
    for out_dir, name, runs in zip(out_dirs, names, models):
        name = name if len(models) > 1 else None
        model_lines, model_problems, model_passed = model_sections(runs, name)
        c_lines, c_problems = c_runtime_section(out_dir, list(dict.fromkeys(cpu for cpu, _, _, _ in runs)), name)
        lines += model_lines + c_lines
        problems += model_problems + c_problems
        passed += model_passed
    runs = [run for runs in models for run in runs]
    lines.append(f"{passed} of {len(runs)} rows pass." + (f" Unexpected: {'; '.join(problems)}." if problems else ""))
    known = [k for k in KNOWN_FAILURES if k in {(c, v, r) for c, v, r, _ in runs}]
    if known:
        lines += ["", "Known failures:", ""]
        lines += [f"{list(KNOWN_FAILURES).index(k) + 1}. {' '.join(k)}: {KNOWN_FAILURES[k]}" for k in known]
    return "\n".join(lines) + "\n", problems


def model_sections(runs, name=None):
    """(lines, problems, rows passed): one model's table per emulated CPU; name goes in the headings."""
    lines, problems, passed = [], [], 0
    for cpu in dict.fromkeys(cpu for cpu, _, _, _ in runs):
        device = next((r for c, _, _, r in runs if c == cpu and "hwcaps" in r), None)
        lines += [f"## {CPU_TITLES.get(cpu, cpu)}" + (f": {name}" if name else ""), ""]
        if device:
            lines += [f"`QEMU_CPU={cpu}`: {device['machine']}, Python {device['python']}, CPU features the kernel "
                      f"reports (HWCAP): {' '.join(device['hwcaps'])}. {CPU_NOTES.get(cpu, '')}".rstrip(), ""]
        lines += ["| virtualenv | row | max \\|Δ\\| one step: logits / state | max \\|Δ\\| fed-back steps: logits / state "
                  "| top-1 | greedy / seeded text | result |", "|---|---|---|---|---|---|---|"]
        for c, venv, row, result in runs:
            if c != cpu:
                continue
            cell, problem = verdict((cpu, venv, row), result)
            passed += cell == "pass"
            if problem:
                problems.append(f"{name + ', ' if name else ''}{cpu} {venv} {row}: {problem}")
            lines.append("| " + " | ".join([VENV_TITLES.get(venv, venv), *row_cells(row, result), cell]) + " |")
        lines.append("")
    return lines, problems, passed


def main(*args):
    if len(args) < 2:
        sys.exit("usage: python edge/report.py OUT_DIR [OUT_DIR...] EDGE.md")
    *out_dirs, path = args
    text, problems = render(out_dirs)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
