"""Tables and figures of an evaluation (rows from :mod:`apollo_jax.evaluation.evaluate`).

Files written into the output folder:
  - ``results.csv``, ``results.json``: one row per file x bitrate x system.
  - ``table.md``: Table II of the paper (rows systems, columns categories and Overall, cells
    the metrics separated by "/"), then the per-bitrate means (Fig. 2 in numbers) and the
    skipped files.
  - ``bitrate_<metric>.png``: metric vs bitrate, one line per system (Fig. 2 layout).
  - ``categories.png``: per-category bar chart, one panel per metric.
  - ``spectrograms/*.png``: clean / degraded / restored spectrograms (drawn during the run).

Means are over rows: a category cell averages its files over all bitrates; Overall averages
every file and bitrate. Undefined values (nan) are left out of means.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re

import numpy as np
from matplotlib.figure import Figure  # The object API: no pyplot, no global backend state.

from apollo_jax.evaluation import metrics

CATEGORY_LABELS = {"vocal": "Vocal", "single": "Single Stem", "multi": "Multi-Stems",
                   "multi+vocal": "Multi-Stems+Vocal"}
METRIC_LABELS = {"sdr": "SDR (dB)", "si_snr": "SI-SNR (dB)", "si_sdr": "SI-SDR (dB)",
                 "visqol": "ViSQOL (MOS)", "lsd": "LSD"}
ROW_FIELDS = ("file", "category", "codec", "bitrate", "system", "seconds")


def _mean(rows: list[dict], metric: str) -> float:
  vals = [float(r[metric]) for r in rows if r.get(metric) is not None and not math.isnan(float(r[metric]))]
  return float(np.mean(vals)) if vals else math.nan


def _fmt(v: float) -> str:
  return "–" if math.isnan(v) else f"{v:.2f}"


def categories(rows: list[dict]) -> list[str]:
  """Categories present, the paper's four first in the paper's order."""
  present = {r["category"] for r in rows}
  return [c for c in CATEGORY_LABELS if c in present] + sorted(present - set(CATEGORY_LABELS))


def category_table(rows: list[dict], systems: list[str], metric_names: tuple[str, ...]) -> str:
  """Markdown Table II: rows systems, columns categories + Overall, cells ``m1/m2/...``."""
  cats = categories(rows)
  cols = [] if cats == ["all"] else cats
  files = lambda rs: len({r["file"] for r in rs})
  head = [f"{CATEGORY_LABELS.get(c, c)} (n={files([r for r in rows if r['category'] == c])})" for c in cols]
  head.append(f"Overall (n={files(rows)})")
  lines = ["| System | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
  for s in systems:
    srows = [r for r in rows if r["system"] == s]
    cells = [[r for r in srows if r["category"] == c] for c in cols] + [srows]
    lines.append(f"| {s} | " + " | ".join("/".join(_fmt(_mean(c, m)) for m in metric_names) for c in cells) + " |")
  return "\n".join(lines)


def bitrate_table(rows: list[dict], systems: list[str], metric_names: tuple[str, ...]) -> str:
  """Markdown table of means per system, metric and bitrate."""
  bitrates = sorted({int(r["bitrate"]) for r in rows})
  lines = ["| System | Metric | " + " | ".join(f"{b} kbit/s" for b in bitrates) + " |",
           "|" + "---|" * (len(bitrates) + 2)]
  for s in systems:
    for m in metric_names:
      vals = [_mean([r for r in rows if r["system"] == s and int(r["bitrate"]) == b], m) for b in bitrates]
      lines.append(f"| {s} | {METRIC_LABELS[m]} | " + " | ".join(_fmt(v) for v in vals) + " |")
  return "\n".join(lines)


NO_HARM_METRICS = ("visqol", "si_snr")


def no_harm_lines(rows: list[dict], systems: list[str], metric_names: tuple[str, ...]) -> list[str]:
  """One line per restoring system and bitrate: the share of clips it makes worse.

  A clip counts as harmed on a metric when the restoration scores below the codec input
  (``systems[0]``) on that clip; only ViSQOL and SI-SNR are counted (the issue's "no harm"
  criterion), each when it was scored.
  """
  metrics = [m for m in NO_HARM_METRICS if m in metric_names]
  value = lambda r, m: (float(r[m]) if r.get(m) is not None and not math.isnan(float(r[m]))
                        else None)
  base = {(r["file"], r["category"], int(r["bitrate"])): r for r in rows if r["system"] == systems[0]}
  lines = []
  for s in systems[1:]:
    for b in sorted({int(r["bitrate"]) for r in rows}):
      parts = []
      for m in metrics:
        pairs = [(value(r, m), value(base[k], m)) for r in rows
                 if r["system"] == s and int(r["bitrate"]) == b
                 and (k := (r["file"], r["category"], b)) in base]
        pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
        worse = sum(x < y for x, y in pairs)
        share = f"{100 * worse / len(pairs):.0f}%" if pairs else "–"
        parts.append(f"{METRIC_LABELS[m].split(' ')[0]} {worse}/{len(pairs)} ({share})")
      if parts:
        lines.append(f"- {s} at {b} kbit/s: below the {systems[0]} input on " + ", on ".join(parts))
  return lines


def markdown_report(rows: list[dict], skipped: list[dict], systems: list[str], opts) -> str:
  names = tuple(opts.metrics)
  rates = ", ".join(str(b) for b in sorted({int(r["bitrate"]) for r in rows}))
  order = "/".join(METRIC_LABELS[m].split(" ")[0] for m in names)
  text = [f"# Evaluation: {opts.codec.upper()} at {rates} kbit/s", "",
          f"Cells: {order}, mean over files and bitrates ({', '.join(METRIC_LABELS[m] for m in names)}; "
          "LSD lower is better, the others higher). "
          f"The {systems[0]} row scores the degraded input itself.", "",
          category_table(rows, systems, names), "", "## Per bitrate", "",
          bitrate_table(rows, systems, names), ""]
  harm = no_harm_lines(rows, systems, names)
  if harm:
    text += ["## No harm", "", "Clips where the restoration scores below the codec input "
             "(fewer is better):", ""] + harm + [""]
  if skipped:
    text += [f"## Skipped files ({len(skipped)})", ""] + [f"- `{s['file']}`: {s['reason']}" for s in skipped] + [""]
  return "\n".join(text)


def _clean_value(v):
  if isinstance(v, float) and not math.isfinite(v):
    return None  # JSON has no nan/inf.
  return v


def write_rows(out_dir: str, rows: list[dict], skipped: list[dict], systems: list[str], opts,
               sample_rate: int) -> None:
  fields = list(ROW_FIELDS) + list(opts.metrics)
  with open(os.path.join(out_dir, "results.csv"), "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
  summary = {s: {c: {m: _clean_value(_mean([r for r in rows if r["system"] == s and (c == "overall" or r["category"] == c)], m))
                     for m in opts.metrics} for c in categories(rows) + ["overall"]} for s in systems}
  doc = {"codec": opts.codec, "bitrates": sorted({int(r["bitrate"]) for r in rows}),
         "metrics": list(opts.metrics), "sample_rate": sample_rate, "systems": systems,
         "clip_seconds": opts.clip_seconds, "summary": summary,
         "rows": [{k: _clean_value(r.get(k)) for k in fields} for r in rows], "skipped": skipped}
  with open(os.path.join(out_dir, "results.json"), "w", encoding="utf-8") as f:
    json.dump(doc, f, indent=1)


def plot_bitrates(path: str, rows: list[dict], systems: list[str], metric: str) -> None:
  """Fig. 2 layout: mean ``metric`` vs bitrate, one line per system (the input dashed)."""
  bitrates = sorted({int(r["bitrate"]) for r in rows})
  fig = Figure(figsize=(5, 3.6), dpi=120)
  ax = fig.add_subplot()
  for i, s in enumerate(systems):
    vals = [_mean([r for r in rows if r["system"] == s and int(r["bitrate"]) == b], metric) for b in bitrates]
    ax.plot(bitrates, vals, "o--" if i == 0 else "o-", color="0.5" if i == 0 else None, label=s)
  ax.set_xticks(bitrates)
  ax.set_xlabel("bitrate (kbit/s)")
  ax.set_ylabel(METRIC_LABELS[metric])
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(path)


def plot_categories(path: str, rows: list[dict], systems: list[str], metric_names) -> None:
  """Grouped bars: one panel per metric, categories (and Overall) on x, one bar per system."""
  cats = categories(rows)
  groups = ([] if cats == ["all"] else cats) + ["overall"]
  fig = Figure(figsize=(max(4.0, 1.2 * len(groups) + 1.5), 2.6 * len(metric_names)), dpi=120)
  width = 0.8 / len(systems)
  x = np.arange(len(groups))
  for p, m in enumerate(metric_names):
    ax = fig.add_subplot(len(metric_names), 1, p + 1)
    for i, s in enumerate(systems):
      vals = [_mean([r for r in rows if r["system"] == s and (g == "overall" or r["category"] == g)], m) for g in groups]
      ax.bar(x + (i - (len(systems) - 1) / 2) * width, vals, width, label=s, color="0.6" if i == 0 else None)
    ax.set_xticks(x, [CATEGORY_LABELS.get(g, g.capitalize()) for g in groups])
    ax.set_ylabel(METRIC_LABELS[m])
    ax.grid(axis="y", alpha=0.3)
    if p == 0:
      ax.legend(fontsize="small", ncols=min(len(systems), 4))
  fig.tight_layout()
  fig.savefig(path)


def spectrogram_name(file_name: str, codec: str, bitrate: int) -> str:
  """A flat, filesystem-safe PNG name for one file's spectrogram comparison."""
  stem = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.splitext(file_name)[0]).strip("_") or "file"
  return f"{stem}_{codec}{int(bitrate)}.png"


def plot_spectrograms(path: str, panels: list[tuple[str, np.ndarray]], sample_rate: int,
                      title: str) -> None:
  """Stacked log-power spectrograms of ``(label, (channels, samples))`` pairs (channel mix)."""
  specs = [10 * np.log10(metrics.power_spectrogram(x.mean(0)) + 1e-10) for _, x in panels]
  top = max(float(s.max()) for s in specs)
  fig = Figure(figsize=(8, 1.9 * len(panels) + 0.4), dpi=110)
  seconds = panels[0][1].shape[-1] / sample_rate
  for i, ((label, _), s) in enumerate(zip(panels, specs)):
    ax = fig.add_subplot(len(panels), 1, i + 1)
    im = ax.imshow(s, origin="lower", aspect="auto", cmap="magma", vmin=top - 90, vmax=top,
                   extent=(0, seconds, 0, sample_rate / 2000))
    ax.set_ylabel("kHz")
    ax.set_title(label, fontsize="small", loc="left")
    if i < len(panels) - 1:
      ax.set_xticklabels([])
  ax.set_xlabel("time (s)")
  fig.subplots_adjust(hspace=0.35)
  fig.suptitle(title, fontsize="small")
  fig.colorbar(im, ax=fig.axes, label="dB", shrink=0.8)
  fig.savefig(path)


def write_all(out_dir: str, rows: list[dict], skipped: list[dict], systems: list[str], opts,
              sample_rate: int) -> list[str]:
  """Writes results, table and figures; returns the file names written."""
  write_rows(out_dir, rows, skipped, systems, opts, sample_rate)
  with open(os.path.join(out_dir, "table.md"), "w", encoding="utf-8") as f:
    f.write(markdown_report(rows, skipped, systems, opts))
  written = ["results.csv", "results.json", "table.md"]
  for m in opts.metrics:
    name = f"bitrate_{m}.png"
    plot_bitrates(os.path.join(out_dir, name), rows, systems, m)
    written.append(name)
  plot_categories(os.path.join(out_dir, "categories.png"), rows, systems, opts.metrics)
  return written + ["categories.png"]
