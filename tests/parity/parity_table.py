"""Render the parity suite's measures as the markdown of PARITY.md (written by `make parity`).

Columns, each against the Keras reference on the same inputs:
  1 step from 0 / from random: max |delta logits| / max |delta state| after one step from the zero state
      and from random states in (-1, 1), 8 cases each;
  N steps: the same, maxed over N fed-back steps along real text (the reference's logits range is in the heading);
  top-1: share of those steps whose argmax agrees;
  bpc: the row's own teacher-forced loss along those N characters of the book, in bits per character
      (estella evaluate's measure; the cost of int8 in quality, beside its top-1 agreement);
  greedy: identical prefix of N greedy characters after the same prime, and the share of corpus words in it;
  sampled: identical prefix of N characters sampled at temperature 0.8, top-p 0.95, the same seed;
  B=4 vs 1: max |delta| between 4 streams run as one batch and the same 4 streams run alone (same format);
  checks: the thresholds of estella.runtime.parity.check, "pass" or what failed.
"""

import datetime
import platform

from estella.runtime import parity as probe


def render(results, order, legs=()):
    lines = ["# Parity of the exported formats", "",
             f"Written by `make parity` ({_now()}, {_versions()}); every number is from that run, none is typed.",
             "", "Every row is loaded through the runtime's `open_backend`; the `tflite_runtime` rows ran in "
             + (", ".join(legs) or "(no tflite-runtime leg ran)") + ".",
             "", "Thresholds: float rows max |delta| <= "
             f"{probe.FLOAT_TOLERANCE:g}, greedy and seeded sampled text identical for all N characters, "
             f"batch equal to single streams within {probe.FLOAT_TOLERANCE:g}; "
             f"int8 rows top-1 >= {probe.INT8_TOP1:.0%}, "
             f"max |delta logits| <= {probe.INT8_RANGE_FRACTION:.0%} of the reference logits' range over the same "
             f"steps, greedy text made of corpus words (>= {probe.WORDS_MIN:.0%}; asked where the reference's own "
             "greedy text is) and not a loop of one character.", "",
             "Deltas: 1 step = max |delta logits| / max |delta state| over 8 single steps; "
             "N steps = the same over N fed-back steps along the book's text; bpc = the row's teacher-forced "
             "loss over those N characters in bits per character.", ""]
    for key in order:
        lines += _model_table(results[key])
    return "\n".join(lines) + "\n"


def _model_table(result):
    model, rows = result["model"], result["rows"]
    any_row = next(iter(rows.values()))
    n = any_row["steps"]
    out = [f"## {result['title']}", "",
           f"V={model['V']}, E={model['E']}, {model['layers']}, {model['origin']}. N={n} steps; reference logits range "
           f"{any_row['text_range']:.3f} over them "
           f"(int8 limit {probe.INT8_RANGE_FRACTION * any_row['text_range']:.4f}), "
           f"{any_row['one_step_range']:.3f} over the single steps. " + _greedy_note(any_row), "",
           "| row | 1 step from 0 | 1 step from random | N steps | top-1 | bpc | greedy | sampled | B=4 vs 1 | checks |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in rows.items():
        failures = probe.check(m, m["precision"])
        out.append(" | ".join([
            f"| {name}", _pair(m["zero_dlogits"], m["zero_dstate"]), _pair(m["random_dlogits"], m["random_dstate"]),
            _pair(m["text_dlogits"], m["text_dstate"]), f"{m['top1']:.1%}", f"{m['text_bpc']:.4f}",
            f"{m['greedy_prefix']}/{n}, {m['greedy_words']:.0%} words" + (", loop" if m["greedy_loop"] else ""),
            f"{m['sampled_prefix']}/{n}", _pair(m["batch_dlogits"], m["batch_dstate"]),
            "pass" if not failures else "FAIL: " + "; ".join(failures)]) + " |")
    return out + [""]


def _greedy_note(m):
    share, loop = m["reference_greedy_words"], m["reference_greedy_loop"]
    note = f"The reference's greedy text is {share:.0%} corpus words" + (", a loop of one character" if loop else "")
    if share < probe.WORDS_MIN or loop:
        return note + ", so int8 greedy text is not held to " + " or ".join(
            (["words"] if share < probe.WORDS_MIN else []) + (["no loop"] if loop else [])) + " here."
    return note + "."


def _pair(dlogits, dstate):
    return f"{dlogits:.1e} / {dstate:.1e}"


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _versions():
    from importlib.metadata import PackageNotFoundError, version

    found = [f"Python {platform.python_version()}"]
    for package in ("tensorflow-cpu", "tensorflow", "keras", "ai-edge-litert", "onnxruntime", "numpy"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)
