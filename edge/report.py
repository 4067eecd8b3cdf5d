"""EDGE.md from what edge/run.sh collected: per emulated CPU model, each device virtualenv's rows.

    python edge/report.py OUT_DIR EDGE.md

Stdlib only. The pass/fail of a row is estella.runtime.parity's check, made on the device; this
file only lays out its numbers. Exit status 1 when any row failed or did not run.
"""

import json
import os
import sys

CPU_TITLES = {"cortex-a72": "Cortex-A72 (Raspberry Pi 4 class)", "cortex-a76": "Cortex-A76 (Raspberry Pi 5 class)"}
VENV_TITLES = {"tflite": "`estella[tflite]`", "onnx": "`estella[onnx]`",
               "tflite-runtime": "tflite-runtime 2.14 + numpy<2, `estella --no-deps`"}
INTERPRETERS = {"ai_edge_litert": ("LiteRT", "ai-edge-litert"), "tflite_runtime": ("tflite-runtime", "tflite-runtime"),
                "onnx": ("ONNX Runtime", "onnxruntime"), "numpy": ("numpy backend", "numpy")}


def read_tsv(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def load_device(out_dir, cpu, venv):
    """The device's JSON, or None and the last lines of its stderr when it printed none."""
    path = os.path.join(out_dir, cpu, venv)
    try:
        with open(path + ".json", encoding="utf-8") as f:
            return json.load(f), ""
    except (OSError, ValueError):
        with open(path + ".log", encoding="utf-8", errors="replace") as f:
            tail = [line.strip() for line in f if line.strip()][-1:]
        return None, " ".join(tail) or "no output"


def collect(out_dir):
    """[(cpu, venv, device JSON or None, [(row, result)])], with a failure for every row that did not run."""
    runs = []
    for cpu, venv, rows in read_tsv(os.path.join(out_dir, "rows.tsv")):
        device, error = load_device(out_dir, cpu, venv)
        results = []
        for row in rows.split():
            result = device["rows"].get(row) if device else None
            if result is None:
                result = {"interpreter": None, "measures": None,
                          "failures": [f"did not run: {error or 'missing from the device output'}"]}
            results.append((row, result))
        runs.append((cpu, venv, device, results))
    return runs


def fmt(x):
    return f"{x:.1e}" if x < 1e-2 else f"{x:.3f}"


def row_cells(row, result, device):
    backend, precision = row.split(":")
    name, package = INTERPRETERS.get(result["interpreter"] or backend, (backend, backend))
    version = (device or {}).get("versions", {}).get(package, "")
    m = result["measures"]
    label = f"{name} {version} {precision}".replace("  ", " ")
    if m is None:
        return [label, "", "", "", "", "FAIL: " + "; ".join(result["failures"])]
    one = max(m["zero_dlogits"], m["random_dlogits"]), max(m["zero_dstate"], m["random_dstate"])
    if precision == "float32":
        single = f"{fmt(one[0])} / {fmt(one[1])}"
        steps = f"{fmt(m['text_dlogits'])} / {fmt(m['text_dstate'])}"
        text = ("identical" if m["greedy_prefix"] == m["steps"] else f"{m['greedy_prefix']}/{m['steps']}") + " / " + (
            "identical" if m["sampled_prefix"] == m["steps"] else f"{m['sampled_prefix']}/{m['steps']}")
        top1 = f"{m['top1']:.0%}"
    else:
        single = f"{fmt(one[0])} ({one[0] / m['one_step_range']:.1%} of range)"
        steps = f"{fmt(m['text_dlogits'])} ({m['text_dlogits'] / m['text_range']:.1%} of range)"
        text = "not compared (int8)"
        top1 = f"{m['top1']:.1%}"
    verdict = "pass" if not result["failures"] else "FAIL: " + "; ".join(result["failures"])
    return [label, single, steps, top1, text, verdict]


def render(out_dir):
    runs = collect(out_dir)
    system = dict(read_tsv(os.path.join(out_dir, "system.tsv")))
    sizes = dict(read_tsv(os.path.join(out_dir, "sizes.tsv")))
    steps = next((d["steps"] for _, _, d, _ in runs if d), "?")
    lines = [
        "# Edge proof: the runtime on emulated aarch64", "",
        "Written by `make edge` (edge/report.py); do not edit by hand. The TensorFlow-free runtime runs in a",
        f"Debian {system.get('debian', '?')} arm64 root filesystem under {system.get('qemu', 'qemu')} (user mode,",
        "`QEMU_CPU` set to the core), in three virtualenvs installed there by the device's own pip from aarch64",
        "cp311 wheels. Every row runs estella.runtime.parity against the Keras model's record made on the",
        "x86-64 host and stored with the fixture: float32 within 1e-4 on single steps and along "
        f"{steps} fed-back steps,", "identical greedy and seeded text; int8 top-1 >= 95% and |Δ logits| <= 2% of the reference's logit",
        "range (int8 text is not compared across machines: int8 kernels differ by CPU features). Emulated",
        "time says nothing about a device's speed, so none is reported.", "",
        "## Device virtualenvs", "", "| virtualenv | installed size |", "|---|---|"]
    for venv, size in sizes.items():
        lines.append(f"| {VENV_TITLES.get(venv, venv)} | {int(size) / 1e6:.0f} MB |")
    lines.append("")
    failed = 0
    for cpu in dict.fromkeys(cpu for cpu, _, _, _ in runs):
        devices = [d for c, _, d, _ in runs if c == cpu and d]
        lines += [f"## {CPU_TITLES.get(cpu, cpu)}", ""]
        if devices:
            d = devices[0]
            lines += [f"`QEMU_CPU={cpu}`: {d['machine']}, Python {d['python']}, CPU features the kernel reports "
                      f"(HWCAP): {' '.join(d['hwcaps'])}.", ""]
        lines += ["| virtualenv | row | max \\|Δ\\| one step: logits / state | max \\|Δ\\| fed-back steps: logits / state "
                  "| top-1 | greedy / seeded text | result |", "|---|---|---|---|---|---|---|"]
        for c, venv, device, results in runs:
            if c != cpu:
                continue
            for row, result in results:
                failed += bool(result["failures"])
                lines.append("| " + " | ".join([VENV_TITLES.get(venv, venv)] + row_cells(row, result, device)) + " |")
        lines.append("")
    total = sum(len(r) for _, _, _, r in runs)
    lines.append(f"{total - failed} of {total} rows pass." if failed else f"All {total} rows pass.")
    return "\n".join(lines) + "\n", failed


def main(out_dir, path):
    text, failed = render(out_dir)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
