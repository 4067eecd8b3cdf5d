"""The whole benchmark: prepare the models, run each part in its own child process, write the report.

Generation and the process probes run with one thread per library (set in the children's
environment before numpy or TensorFlow start); training runs with TensorFlow's defaults.
A part that fails is reported as not measured, and the rest still runs.
"""

import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback

from . import c_runtime, footprint, processes, report
from .generation import RUNTIME_CASES
from .models import CACHE, REPO, Shape, default_corpus, prepare, vocabulary

SECTIONS = ("generation", "serving", "processes", "c_runtime", "training", "prepare", "footprint")
PACKAGES = ("numpy", "tensorflow-cpu", "keras", "ai-edge-litert", "onnxruntime", "onnx", "tf2onnx")


class Settings:
    def __init__(self, quick):
        self.quick = quick
        self.repeats = 3 if quick else 9
        self.block_seconds = 0.05 if quick else 0.2
        self.batches = "1,8,32"
        # `estella serve` under 1..64 streaming clients, each sending `requests` of `chars` characters in turn.
        # ray_clients: the same against one replica on Ray Serve (its overhead).
        self.serving = {"clients": "1,8,32,64", "requests": 2 if quick else 4, "chars": 128 if quick else 256,
                        "repeats": 2 if quick else 5, "ray_clients": "1,32"}
        self.probe_repeats = 1 if quick else 3
        self.probe_chars = 50 if quick else 300
        self.c_chars = 500 if quick else 3000  # per process of the C runtime's comparison
        # (preset, cases, steps per round, rounds): a few dozen steps per case; a seed step takes ~3x a default one.
        self.training = [("default", None, 3, 1) if quick else ("default", None, 6, 3),
                         ("seed", "original recipe,estella,estella + bf16", 2 if quick else 8, 1 if quick else 3)]
        # `estella prepare`: (copies of the book, MB of synthetic text, rounds).
        self.prepare = (5, 20, 1) if quick else (20, 100, 3)

    def as_dict(self, threads):
        return {"quick": self.quick, "repeats": self.repeats, "block_seconds": self.block_seconds,
                "threads": threads, "probe_repeats": self.probe_repeats, "probe_chars": self.probe_chars,
                "c_chars": self.c_chars,
                "serving": self.serving,
                "training": [{"preset": p, "steps_per_round": s, "rounds": r} for p, _, s, r in self.training],
                "prepare": dict(zip(("book_copies", "synthetic_mb", "rounds"), self.prepare))}


# The generation models: the default preset's shape, the original's GRU of 1024 (the seed preset), and
# the two stacks of the model family, GRU 2 x 512 (quality) and LSTM 2 x 512 (char-rnn).
MEASURED_PRESETS = ("default", "seed", "quality", "char-rnn")


def preset_shapes():
    """{"default (GRU 1x512)": Shape, ...} of MEASURED_PRESETS."""
    from estella.build.config import PRESETS
    shapes = {name: Shape(PRESETS[name].embedding_dim, tuple(PRESETS[name].units), PRESETS[name].cell)
              for name in MEASURED_PRESETS}
    return {f"{name} ({shape.words()})": shape for name, shape in shapes.items()}


def child_env(threads):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


def run_child(module, positional, flags, env):
    """Run `python -m estella.bench.<module> POSITIONAL... OUT FLAGS...` and return the JSON it writes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        cmd = [sys.executable, "-m", f"estella.bench.{module}", *positional, out, *flags]
        proc = subprocess.run(cmd, env=env, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{module} failed:\n{proc.stderr[-3000:]}")
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def machine():
    cpu = platform.processor() or platform.machine()
    memory = 0
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        with open("/proc/meminfo") as f:
            memory = int(next(line.split()[1] for line in f if line.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory, "os": platform.platform(),
            "load_before": load_average()}


def load_average():
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def versions():
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for name in ("estella", *PACKAGES):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def run(out_dir=None, quick=False, corpus=None, threads=1, sections=SECTIONS, settings=None, shapes=None,
        cache=CACHE, log=print):
    """Run the parts in `sections` and write the report. settings, shapes ({name: Shape}, each name
    starting with its preset's) and cache default to the real benchmark's; the test passes small ones."""
    started = time.time()
    settings = settings or Settings(quick)
    shapes = shapes or preset_shapes()
    out_dir = report_folder(out_dir, quick, sections)
    corpus = corpus or default_corpus()
    vocab = vocabulary(corpus)  # a bad --corpus fails here, before any work
    env = child_env(threads)
    result = {"command": "estella bench" + (" --quick" if quick else ""), "machine": machine(),
              "versions": versions(), "settings": settings.as_dict(threads), "errors": {}}
    attempt = attempter(result["errors"])

    served_shapes = serving_models(shapes)
    ready = export_models(models_needed(shapes, sections, served_shapes), vocab, cache, attempt, log)
    if "generation" in sections:
        result["generation"] = measure_generation(ready, settings, threads, env, attempt, log)
    if "serving" in sections:
        result["serving"] = {}
        for name in served_shapes:
            if name in ready:
                served = measure_serving(name, ready[name][1], settings, threads, env, attempt, log)
                if served:
                    result["serving"][name] = served
    if "processes" in sections:
        one_layer = {name: ready[name] for name in ready if len(shapes[name].units) == 1}
        result["processes"] = measure_processes(one_layer, settings, threads, env, attempt, log)
    if "c_runtime" in sections and ready:
        c = measure_c_runtime(ready, settings, env, attempt, log)
        if c:
            result["c_runtime"] = c
    if "training" in sections:
        result["training"] = measure_training(corpus, settings, attempt, log)
    if "prepare" in sections:
        prepared = measure_prepare(corpus, settings, env, attempt, log)
        if prepared:
            result["prepare"] = prepared
    if "footprint" in sections:
        log("footprint")
        f = attempt("footprint", lambda: footprint.measure(sys.prefix, log))
        if f:
            result["footprint"] = f

    result["machine"]["load_after"] = load_average()
    result["seconds"] = time.time() - started
    result["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report.write_all(result, out_dir)
    log(f"wrote {', '.join(os.path.join(out_dir, f) for f in ('BENCHMARKS.md', 'bench.json', 'bench.png'))} "
        f"in {result['seconds'] / 60:.1f} min")
    return result


def report_folder(out_dir, quick, sections):
    """Only a full run replaces the committed report; a quick or partial one goes to the cache."""
    full = not quick and set(sections) == set(SECTIONS)
    out_dir = out_dir or (REPO if full else os.path.join(CACHE, "quick" if quick else "partial"))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        from estella.runtime.errors import EstellaError
        raise EstellaError(f"--out {out_dir} is a file; give a folder for BENCHMARKS.md, bench.json and bench.png")
    return out_dir


def attempter(errors):
    """attempt(section, fn): fn's result, or None with the failure recorded in `errors`."""
    def attempt(section, fn):
        try:
            return fn()
        except Exception as e:  # one broken part must not lose the others' numbers
            traceback.print_exc()
            errors[section] = f"{type(e).__name__}: {str(e).strip()[-1500:]}"
            return None
    return attempt


def serving_models(shapes):
    """Serving adds HTTP and scheduling around the same steps, so it runs on two shapes only: the default
    preset's (else the first one-layer shape) and the stack with the widest state row (what continuous
    batching carries per stream)."""
    one_layer = [n for n in shapes if len(shapes[n].units) == 1]
    stacks = [n for n in shapes if len(shapes[n].units) > 1]
    chosen = [next((n for n in one_layer if n.startswith("default")), one_layer[0])] if one_layer else []
    if stacks:
        chosen.append(max(stacks, key=lambda n: state_size(shapes[n])))
    return chosen


def measure_c_runtime(ready, settings, env, attempt, log):
    """estella-c beside the Python runtime on each model's float32 TFLite file (bench/c_runtime.py)."""
    log("C runtime (estella-c) beside the Python runtime")
    exports = {name: export_dir for name, (_, export_dir) in ready.items()}
    return attempt("c_runtime", lambda: c_runtime.measure(exports, settings.probe_repeats, settings.c_chars, env, log))


def state_size(shape):
    from estella.runtime.weights_format import STATE_PARTS
    return len(STATE_PARTS[shape.cell]) * sum(shape.units)


def models_needed(shapes, sections, served_shapes):
    if {"generation", "processes", "c_runtime"} & set(sections):
        return shapes
    return {name: shapes[name] for name in served_shapes} if "serving" in sections else {}


def export_models(wanted, vocab, cache, attempt, log):
    """{name: (run_dir, export_dir)} of the models that could be trained and exported."""
    models = {}
    for name, shape in wanted.items():
        models[name] = attempt(f"export {name}", lambda: prepare(name.split()[0], vocab, shape, cache, log))
    return {name: m for name, m in models.items() if m}


def measure_generation(ready, settings, threads, env, attempt, log):
    out = {}
    for name, (run_dir, export_dir) in ready.items():
        log(f"generation, {name}")
        flags = ["--repeats", str(settings.repeats), "--threads", str(threads),
                 "--block-seconds", str(settings.block_seconds), "--batches", settings.batches]
        g = attempt(f"generation {name}", lambda: run_child("generation", [run_dir, export_dir], flags, env))
        if g:
            out[name] = g
    return out


def measure_serving(name, export_dir, settings, threads, env, attempt, log):
    log(f"serving, {name}")
    sv = settings.serving
    flags = ["--clients", sv["clients"], "--requests", str(sv["requests"]), "--chars", str(sv["chars"]),
             "--repeats", str(sv["repeats"]), "--threads", str(threads), "--ray-clients", sv["ray_clients"]]
    return attempt(f"serving {name}", lambda: run_child("serving", [export_dir], flags, env))


def measure_processes(ready, settings, threads, env, attempt, log):
    out = {}
    for name, (run_dir, export_dir) in ready.items():
        log(f"cold start and memory, {name}")
        cases = {f"{b} {p}": (b, p, export_dir) for b, p in RUNTIME_CASES}
        cases["keras (TensorFlow path)"] = ("keras", "float32", run_dir)
        p = attempt(f"processes {name}", lambda: processes.measure(
            cases, settings.probe_repeats, settings.probe_chars, threads, env, log))
        if p:
            out[name] = p
    return out


def measure_training(corpus, settings, attempt, log):
    out = {}
    train_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    for preset_name, cases, steps, rounds in settings.training:
        log(f"training, preset {preset_name}")
        flags = ["--preset", preset_name, "--steps", str(steps), "--rounds", str(rounds)]
        t = attempt(f"training {preset_name}", lambda: run_child(
            "training", [corpus], flags + (["--cases", cases] if cases else []), train_env))
        if t and preset_name == "default" and importlib.util.find_spec("jax"):
            # Keras' other backend is an option too; it needs its own process, run right after.
            log("training, preset default, KERAS_BACKEND=jax")
            jax_env = dict(train_env, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
            j = attempt("training default (jax)", lambda: run_child(
                "training", [corpus], flags + ["--cases", "estella"], jax_env))
            if j:
                case = j["cases"]["estella"]
                case["about"] = "estella under KERAS_BACKEND=jax, in its own process right after the others"
                t["cases"]["estella, JAX backend"] = case
        if t:
            out[preset_name] = t
    return out


def measure_prepare(corpus, settings, env, attempt, log):
    log("prepare")
    copies, synthetic_mb, rounds = settings.prepare
    return attempt("prepare", lambda: run_child("preparing", [corpus], [
        "--copies", str(copies), "--synthetic-mb", str(synthetic_mb), "--rounds", str(rounds)], env))
