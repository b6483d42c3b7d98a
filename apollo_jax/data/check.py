"""Checks a dataset before training: ``python -m apollo_jax.data.check`` (``apollo-data-check``).

  python -m apollo_jax.data.check --layout musdb /data/musdb18hq
  python -m apollo_jax.data.check --layout paired /data/pairs
  python -m apollo_jax.data.check --config configs/apollo.py:paper \\
      --config.data.layout=musdb --config.data.train_dirs="('/data/musdb18hq',)"

Scans like training does (:func:`apollo_jax.data.sources.scan`), reads the audio once to
measure silence by the training's activity rule, and for ``paired`` layouts measures each
pair's offset (cross-correlation) and length mismatch. Prints a table and exits 0 when
training can start, 2 with the reasons when it cannot (no usable audio, a missing folder,
pairs off by more than one sample: training crops both files of a pair at the same offset).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from typing import Any

import numpy as np

from apollo_jax import audio
from apollo_jax.data import sources
from apollo_jax.data.config import default_data_config
from apollo_jax.data.mixing import ACTIVITY_FRAME_SECONDS

# Seconds of each pair cross-correlated, and the largest offset searched (codec delays are
# a few thousand samples at most; 1105 for LAME).
ALIGN_SECONDS = 30.0
MAX_OFFSET_SECONDS = 0.5


@dataclasses.dataclass
class Settings:
  """What the check compares the data against (from a data config or the defaults)."""
  layout: str
  dirs: tuple[str, ...]
  sample_rate: int = 44100
  channels: int = 2
  min_seconds: float = 3.0
  subset: str = "train"
  threshold_db: float = -50.0
  min_fraction: float = 0.5


@dataclasses.dataclass
class Report:
  """The findings for one set of folders; ``errors`` empty when training can start."""
  title: str
  rows: list[tuple[str, str]] = dataclasses.field(default_factory=list)
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)
  pairs: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  errors: list[str] = dataclasses.field(default_factory=list)


def _files(index: sources.Index) -> list[dict[str, Any]]:
  if index.layout == "paired":
    return [f for p in index.tracks for f in (p["clean"], p["degraded"])]
  return [f for t in index.tracks for fs in list(t["stems"].values()) + [t["mixture"]] for f in fs]


def silent_fraction(path: str, threshold_db: float) -> tuple[float, float]:
  """``(inactive 50 ms frames, seconds)`` of a file by the training's activity rule
  (frame RMS over channels at or below ``threshold_db`` dBFS), read in blocks."""
  inactive = total = 0
  with audio.Reader(path) as r:
    hop = max(1, int(ACTIVITY_FRAME_SECONDS * r.file_rate))
    rest = np.zeros((r.channels, 0), np.float32)
    for block in r.blocks():
      x = np.concatenate([rest, block], axis=1)
      n = x.shape[1] // hop
      power = np.mean(np.square(x[:, :n * hop].reshape(x.shape[0], n, hop), dtype=np.float64), axis=(0, 2))
      inactive += int(np.sum(power <= 10 ** (threshold_db / 10)))
      total += n
      rest = x[:, n * hop:]
    seconds = total * hop / r.file_rate
  return inactive, seconds


def pair_offset(clean: str, degraded: str) -> tuple[int, int]:
  """``(offset, length difference)`` in samples of the degraded file against the clean one.

  ``offset`` > 0: the degraded audio starts late. Found as the peak of the cross-correlation
  of the channel means over the first ``ALIGN_SECONDS``, within +-``MAX_OFFSET_SECONDS``.
  """
  from scipy import signal
  c, rate = audio.load(clean)
  d, _ = audio.load(degraded, rate)
  n = int(ALIGN_SECONDS * rate)
  a, b = c.mean(0)[:n].astype(np.float64), d.mean(0)[:n].astype(np.float64)
  corr = signal.correlate(b, a, mode="full", method="fft")
  lags = signal.correlation_lags(len(b), len(a), mode="full")
  keep = np.abs(lags) <= int(MAX_OFFSET_SECONDS * rate)
  offset = int(lags[keep][np.argmax(corr[keep])]) if np.any(corr[keep] != 0) else 0
  return offset, int(d.shape[1] - c.shape[1])


def _spread(counts: list[int]) -> str:
  if not counts:
    return "–"
  lo, hi = min(counts), max(counts)
  return f"{lo}" if lo == hi else f"{lo}..{hi} (median {int(np.median(counts))})"


def check(s: Settings, title: str = "data", silence: bool = True) -> Report:
  """Scans ``s.dirs`` and measures everything the table shows (module docstring)."""
  rep = Report(title)
  try:
    index = sources.scan(list(s.dirs), s.layout, s.min_seconds, s.subset)
  except sources.DataError as e:
    rep.errors.append(str(e))
    return rep
  rep.skipped = dict(index.skipped)
  paired = s.layout == "paired"
  files = _files(index)
  rep.rows.append(("pairs" if paired else "tracks", str(len(index.tracks))))
  if not paired:
    rep.rows.append(("stems per track", _spread([len(t["stems"]) for t in index.tracks])))
    with_mix = sum(bool(t["mixture"]) for t in index.tracks)
    rep.rows.append(("tracks with a mixture file", str(with_mix)))
  hours = sum(t["seconds"] for t in index.tracks) / 3600
  rep.rows.append(("hours", f"{hours:.2f}"))
  rates = collections.Counter(f["rate"] for f in files)
  rep.rows.append(("sample rates", ", ".join(
      f"{r} Hz: {n} files" + ("" if r == s.sample_rate else f" (resampled to {s.sample_rate})")
      for r, n in sorted(rates.items()))))
  chans = collections.Counter(f["channels"] for f in files)
  what = lambda c: ("" if c == s.channels else " (averaged to mono)" if s.channels == 1
                    else " (duplicated)" if c == 1 else f" (first {s.channels} kept)")
  rep.rows.append(("channels", ", ".join(f"{c}: {n} files{what(c)}" for c, n in sorted(chans.items()))))
  rep.rows.append(("skipped files", str(len(rep.skipped))))
  if silence:
    inactive = seconds = 0.0
    mostly, frames = [], 0
    for f in files:
      try:
        k, sec = silent_fraction(f["path"], s.threshold_db)
      except audio.AudioError as e:
        rep.skipped[f["path"]] = f"unreadable ({e})"
        continue
      n = max(1, round(sec / ACTIVITY_FRAME_SECONDS))
      inactive, seconds, frames = inactive + k, seconds + sec, frames + n
      if k / n > 1 - s.min_fraction:
        mostly.append(f["path"])
    share = inactive / frames if frames else 0.0
    rep.rows.append((f"silent (50 ms frames <= {s.threshold_db:g} dBFS)",
                     f"{100 * share:.1f}% of the audio; {len(mostly)} files more than "
                     f"{100 * (1 - s.min_fraction):.0f}% silent"))
  if paired:
    for p in index.tracks:
      try:
        offset, diff = pair_offset(p["clean"]["path"], p["degraded"]["path"])
      except audio.AudioError as e:
        rep.skipped[p["degraded"]["path"]] = f"unreadable ({e})"
        continue
      rep.pairs.append({"name": p["name"], "offset": offset, "length_diff": diff,
                        "flag": abs(offset) > 1 or abs(diff) > 1})
    bad = [p for p in rep.pairs if p["flag"]]
    rep.rows.append(("pairs off by > 1 sample", str(len(bad))))
    if bad:
      rep.errors.append(
          f"{len(bad)} of {len(rep.pairs)} pairs are off by more than one sample (offset or "
          f"length; first: {bad[0]['name']}, offset {bad[0]['offset']}, length difference "
          f"{bad[0]['length_diff']}); training crops both files at the same offset, so align "
          f"them (or pass --allow-misaligned)")
  return rep


def format_report(rep: Report) -> str:
  width = max([len(k) for k, _ in rep.rows] + [4])
  lines = [f"== {rep.title}"] + [f"  {k:<{width}}  {v}" for k, v in rep.rows]
  if rep.pairs:
    lines.append(f"  {'pair':<40} {'offset':>8} {'length':>8}")
    for p in rep.pairs:
      lines.append(f"  {p['name'][:40]:<40} {p['offset']:>8} {p['length_diff']:>8}"
                   + ("  <- off by more than 1 sample" if p["flag"] else ""))
  for path, reason in sorted(rep.skipped.items()):
    lines.append(f"  skipped {path}: {reason}")
  return "\n".join(lines)


def _load_config(spec: str, overrides: list[str]):
  """A config file ``PATH[:variant]`` with ``--config.a.b=value`` overrides (as train.py)."""
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "config file", flag_values=fv)
  try:
    fv(["check", f"--config={spec}", *overrides])
  except flags.Error as e:
    raise ValueError(str(e)) from None
  return fv.config


def settings_from_config(cfg) -> list[tuple[str, Settings]]:
  """``[(title, Settings)]`` for the train and validation folders of a (data) config."""
  data = cfg.data if "data" in cfg else cfg
  common = dict(layout=data.layout, sample_rate=int(data.sample_rate), channels=int(data.channels),
                threshold_db=float(data.activity_threshold_db),
                min_fraction=float(data.activity_min_fraction))
  out = []
  if data.train_dirs:
    out.append(("train_dirs", Settings(dirs=tuple(data.train_dirs), subset=data.train_subset,
                                       min_seconds=float(data.segment_seconds), **common)))
  if data.val_dirs:
    out.append(("val_dirs", Settings(dirs=tuple(data.val_dirs), subset=data.val_subset,
                                     min_seconds=float(data.val_seconds), **common)))
  return out


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(prog="python -m apollo_jax.data.check",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("dirs", nargs="*", metavar="DIR", help="folders of one layout (with --layout)")
  p.add_argument("--layout", choices=sources.LAYOUTS, help="layout of DIR... (see README, Data)")
  p.add_argument("--config", help="a training or data config file PATH[:variant]; "
                                  "--config.data.X=V overrides as in train.py")
  d = default_data_config()
  p.add_argument("--sample-rate", type=int, default=d.sample_rate, help="training rate (default %(default)s)")
  p.add_argument("--channels", type=int, default=d.channels, help="training channels (default %(default)s)")
  p.add_argument("--min-seconds", type=float, default=d.segment_seconds,
                 help="shortest usable file, the training segment (default %(default)s)")
  p.add_argument("--subset", default=d.train_subset, help="MUSDB18-HQ subset folder (default %(default)s)")
  p.add_argument("--no-silence", action="store_true", help="skip reading the audio for silence")
  p.add_argument("--allow-misaligned", action="store_true",
                 help="paired: report misaligned pairs without failing")
  args, rest = p.parse_known_args(argv)
  unknown = [a for a in rest if not a.startswith("--config.")]
  if unknown:
    p.error(f"unrecognized arguments: {' '.join(unknown)}")
  try:
    if args.config:
      if args.dirs or args.layout:
        raise ValueError("give either --config or --layout with folders, not both")
      todo = settings_from_config(_load_config(args.config, rest))
      if not todo:
        print("the config has no train_dirs: training uses the built-in demo corpus")
        return 0
    else:
      if rest:
        raise ValueError("--config.X=V overrides need --config")
      if not args.layout or not args.dirs:
        raise ValueError("give --layout L and at least one folder, or --config")
      todo = [("data", Settings(args.layout, tuple(args.dirs), args.sample_rate, args.channels,
                                args.min_seconds, args.subset))]
  except (ValueError, KeyError, AttributeError, OSError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  reasons = []
  for title, s in todo:
    rep = check(s, f"{title}: {s.layout} in {', '.join(s.dirs)}", silence=not args.no_silence)
    if args.allow_misaligned:
      rep.errors = [e for e in rep.errors if "off by more than one sample" not in e]
    print(format_report(rep))
    reasons += [f"{title}: {e}" for e in rep.errors]
  if reasons:
    print("training cannot start:", file=sys.stderr)
    for r in reasons:
      print(f"  {' '.join(r.split())}", file=sys.stderr)
    return 2
  print("ok: training can start")
  return 0


def cli() -> None:
  """Entry point of the ``apollo-data-check`` script."""
  raise SystemExit(main())


if __name__ == "__main__":
  cli()
