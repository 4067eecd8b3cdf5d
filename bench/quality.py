"""`estella quality RUN...`: what each trained run reached, side by side, as QUALITY.md.

Every number is read from the runs themselves, never typed in: config.json (the settings),
state.json (each epoch's validation loss and its seconds, as training measured them) and, where
the run was exported, its manifest's parity section (the bits per character of each artifact over
the validation text, measured by the export gate). So the table is what training and export
measured, and the command can be rerun after a run trains further.

Training time is the sum of the epochs' own seconds (fit and validation; not TensorFlow's start-up
or the export). "Within budget" is the best validation loss among the epochs that ended inside the
budget, counted from the first epoch: what the run would have given if stopped there.
"""

import datetime
import json
import math
import os

from estella.runtime.errors import EstellaError
from estella.runtime.weights_format import parameter_count

GOAL_NATS = 1.22      # issue 17: a preset below this validation loss ...
BUDGET_MINUTES = 30   # ... within this much training on the 2-core CPU
INT8_MAX_COST = 0.01  # ... whose int8 artifacts cost less than this many bits per character


class QualityError(EstellaError):
    """A folder that is not a trained run, or a run file that cannot be read."""


def add_parser(subparsers):
    p = subparsers.add_parser("quality", help="compare trained runs' validation loss (writes QUALITY.md)",
                              description="Read trained runs (and their exports) and write a table of what "
                              "each reached: best validation loss, bits per character, the loss within a time "
                              "budget, epochs, training time and the int8 artifacts' cost.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by `estella train`")
    p.add_argument("--out", default="QUALITY.md", help="the Markdown file to write (default: %(default)s; - for stdout)")
    p.add_argument("--budget-minutes", type=float, default=BUDGET_MINUTES,
                   help="training time the 'within budget' column allows (default: %(default)s)")
    p.add_argument("--goal", type=float, default=GOAL_NATS,
                   help="validation loss in nats the report checks each run against (default: %(default)s)")
    p.set_defaults(handler=quality_command)


def quality_command(args):
    if not (args.budget_minutes > 0 and math.isfinite(args.budget_minutes)):
        raise QualityError(f"--budget-minutes must be a positive number, got {args.budget_minutes}")
    if not (args.goal > 0 and math.isfinite(args.goal)):
        raise QualityError(f"--goal must be a positive number of nats, got {args.goal}")
    rows = [read_run(path, args.budget_minutes * 60) for path in args.runs]
    text = render(rows, args.budget_minutes, args.goal, command=" ".join(["estella quality", *args.runs]))
    if args.out == "-":
        print(text, end="")
    else:
        from estella.build.fileio import atomic_path
        with atomic_path(args.out) as tmp, open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.out}")
    return 0


def _read_json(run, name):
    path = os.path.join(run, name)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise QualityError(f"{run} is not a trained run: it has no {name} (give folders written by `estella train`)") from None
    except (OSError, ValueError) as e:
        raise QualityError(f"{path} cannot be read as JSON: {e}") from None


def read_run(run, budget_seconds) -> dict:
    """One row: the run's settings, its epochs, and its export's bits per character (if exported)."""
    cfg, state = _read_json(run, "config.json"), _read_json(run, "state.json")
    try:
        hp, vocab_size = cfg["hparams"], int(cfg["vocab_size"])
        history = [(int(e["epoch"]), float(e["val_loss"]), float(e["seconds"])) for e in state["history"]]
        units = [int(u) for u in (hp["units"] if isinstance(hp["units"], list) else [hp["units"]])]
        cell = hp.get("cell", "gru")
        params = parameter_count(cell, vocab_size, int(hp["embedding_dim"]), units)
    except (KeyError, TypeError, ValueError) as e:
        raise QualityError(f"{run}: config.json or state.json lacks what a trained run records ({e!r})") from None
    if not history:
        raise QualityError(f"{run} has not finished an epoch yet")
    elapsed, curve = 0.0, []  # (epoch, val_loss, training seconds by its end)
    for epoch, val_loss, seconds in history:
        elapsed += seconds
        curve.append((epoch, val_loss, elapsed))
    within = [c for c in curve if c[2] <= budget_seconds]
    return {"run": run, "preset": cfg.get("preset"), "cell": cell, "units": units, "dropout": hp.get("dropout", 0.0),
            "embedding_dim": hp["embedding_dim"], "seq_length": hp["seq_length"], "batch_size": hp["batch_size"],
            "learning_rate": hp["learning_rate"], "epochs_max": hp["epochs"], "precision": cfg.get("mixed_precision", "off"),
            "params": params, "curve": curve, "best": min(curve, key=lambda c: c[1]),
            "within": min(within, key=lambda c: c[1]) if within else None, "export": export_bpc(run)}


def export_bpc(run):
    """{artifact: bpc} over the validation text from the run's export manifest, or None if not exported."""
    path = os.path.join(run, "export", "manifest.json")
    if not os.path.isfile(path):
        return None
    manifest = _read_json(os.path.join(run, "export"), "manifest.json")
    found = ((manifest.get("parity") or {}).get("bpc") or {}).get("artifacts")
    if not isinstance(found, dict):
        return None
    return {name: float(v) for name, v in found.items() if isinstance(v, (int, float))}


def _epochs(row):
    """Epochs run (the run's most); a run resumed with a larger --epochs keeps its first setting in config.json."""
    run, most = len(row["curve"]), row["epochs_max"]
    return f"{run} ({most})" if run <= most else f"{run} ({most}, resumed with more)"


def _minutes(seconds):
    return f"{seconds / 60:.1f}"


def _bpc(nats):
    return nats / math.log(2)


def _costs(bpc):
    """'tflite-int8 +0.0023, onnx-int8 +0.0017' against the float32 tflite row."""
    if not bpc or "tflite-float32" not in bpc:
        return "not exported"
    base = bpc["tflite-float32"]
    return ", ".join(f"{name} {v - base:+.4f}" for name, v in bpc.items() if name != "tflite-float32")


def render(rows, budget_minutes, goal, command) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Quality: validation loss on Great Expectations",
        "",
        f"Written by `{command}` on {when}. Do not edit: rerun the command (each run's numbers come from its "
        "config.json, state.json and export manifest).",
        "",
        "Validation is the last 10% of the text, in windows as trained (each from the zero state). Training time "
        "is the sum of the epochs' own seconds as state.json records them (fit and validation of each epoch; a "
        f"slow epoch means the machine was shared then). **Within {budget_minutes:g} min**: the best validation "
        f"loss among the epochs that ended within {budget_minutes:g} minutes of training. Goal: below "
        f"**{goal} nats** within {budget_minutes:g} minutes, and int8 artifacts costing under {INT8_MAX_COST} "
        "bits per character. The learning rate halves after each epoch without a better validation loss "
        "(Keras ReduceLROnPlateau, factor 0.5, patience 1), and training stops after `patience` such epochs.",
        "",
        "| run | preset | cell | layers x units | dropout | E | seq x batch | Adam lr | precision | parameters "
        f"| epochs (max) | best val loss (epoch) | bits/char | within {budget_minutes:g} min | goal reached at "
        "| training min | int8 cost, bits/char (one stream over the validation text) |",
        "|---|---|---|---|---:|---:|---|---:|---|---:|---:|---|---:|---:|---|---:|---|",
    ]
    for r in rows:
        epoch, loss, _ = r["best"]
        within = f"{r['within'][1]:.4f}" if r["within"] else "-"
        hit = next(((e, s) for e, v, s in r["curve"] if v < goal), None)
        reached = f"epoch {hit[0]}, {_minutes(hit[1])} min" if hit else "not reached"
        out.append(
            f"| {r['run']} | {r['preset']} | {r['cell'].upper()} | {len(r['units'])} x {','.join(map(str, r['units']))} "
            f"| {r['dropout']:g} | {r['embedding_dim']} | {r['seq_length']} x {r['batch_size']} | {r['learning_rate']:g} "
            f"| {r['precision']} | {r['params']:,} | {_epochs(r)} | {loss:.4f} ({epoch}) "
            f"| {_bpc(loss):.3f} | {within} | {reached} | {_minutes(r['curve'][-1][2])} | {_costs(r['export'])} |")
    out += ["", "## Validation loss by epoch", "",
            "Each run's curve: validation loss in nats after each epoch, and the training minutes by then.", ""]
    for r in rows:
        curve = ", ".join(f"{e}: {v:.4f} ({_minutes(s)})" for e, v, s in r["curve"])
        out.append(f"- **{r['run']}**: {curve}")
    return "\n".join(out) + "\n"

