"""A held-out evaluation set the demo model never trained on.

    python scripts/make_heldout.py OUT_DIR [--clips 16] [--seconds 6] [--seed 0]
    python eval.py --checkpoint CKPT --data OUT_DIR --out eval_heldout

writes clean stereo mixtures ``OUT_DIR/<bank>_<NNN>.wav`` (16-bit WAV at 44.1 kHz), a
``manifest.csv`` (``file,category``, the category being the sound bank) that ``eval.py``
reads from the data folder, and ``heldout.json`` describing every clip. What differs from
the training corpus (``apollo_jax.data.soundfont`` with FluidR3_GM):

- **Sounds**: ``TimGM6mb.sf2`` (a different GM soundfont, rendered by FluidSynth) and,
  when TiMidity++ and freepats are installed, freepats' recorded-instrument GUS patches
  (rendered by TiMidity++, its own reverb and resampling).
- **Compositions**: seeds ``seed + 1_000_000`` (the training corpus uses small seeds) and
  the ``HELDOUT`` style: 3/4 as well as 4/4, wider tempi, lydian/phrygian/melodic minor
  scales, other progressions and swing amounts.

The output depends only on the options and the installed banks and renderers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import os
import time

import numpy as np

from apollo_jax import audio
from apollo_jax.data import soundfont as sf

SEED_OFFSET = 1_000_000
BANK_OFFSET = 10_000  # track indices of the second bank, so banks never share a composition


def engines(soundfont: str | None = None, freepats: str = "auto") -> list[sf.Engine]:
  """FluidSynth with ``soundfont`` (default TimGM6mb.sf2), then freepats when ``freepats``
  is "auto" and it is installed, or "yes" (then it must be)."""
  path = soundfont or sf.find_soundfont(sf.HELDOUT_SOUNDFONT)
  if not path:
    raise sf.SoundfontError(f"no {sf.HELDOUT_SOUNDFONT} in {', '.join(sf.SEARCH_DIRS)} "
                            "(Debian/Ubuntu: apt-get install timgm6mb-soundfont; or pass "
                            "--soundfont)")
  train = sf.find_soundfont()
  if train and os.path.realpath(train) == os.path.realpath(path):
    raise sf.SoundfontError(f"{path} is the training soundfont; the held-out set needs "
                            "another one")
  out = [sf.fluidsynth_engine(path)]
  if freepats != "no":
    engine = sf.freepats_engine()
    if engine is None and freepats == "yes":
      raise sf.SoundfontError("freepats needs the `timidity` command and "
                              f"{' or '.join(sf.FREEPATS_CONFIGS)} (Debian/Ubuntu: apt-get "
                              "install timidity freepats)")
    out += [engine] if engine else []
  return out


def _clip(args) -> tuple[str, str, dict]:
  out_dir, engine, seed, index, number, seconds, rate = args
  stems, description = sf.synthesize(seed + SEED_OFFSET, index, seconds, rate,
                                     style=sf.HELDOUT, engine=engine)
  mixture = sum(stems.values())
  name = f"{engine.name.lower()}_{number:03d}.wav"
  audio.save(os.path.join(out_dir, name), mixture.astype(np.float32), rate, subtype="PCM_16")
  return name, engine.name, description


def make_heldout(out_dir: str, clips: int = 16, seconds: float = 6.0, seed: int = 0,
                 sample_rate: int = 44100, soundfont: str | None = None,
                 freepats: str = "auto", workers: int = 2) -> list[tuple[str, str]]:
  """Writes ``clips`` mixtures of ``seconds`` per sound bank into ``out_dir``; returns the
  ``(file, category)`` rows of its ``manifest.csv``."""
  if clips < 1 or seconds <= 0:
    raise ValueError(f"need clips >= 1 and seconds > 0, got clips={clips}, seconds={seconds}")
  banks = engines(soundfont, freepats)
  os.makedirs(out_dir, exist_ok=True)
  jobs = [(out_dir, engine, seed, b * BANK_OFFSET + i, i, float(seconds), sample_rate)
          for b, engine in enumerate(banks) for i in range(clips)]
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:  # subprocesses work
    results = list(pool.map(_clip, jobs))
  rows = [(name, category) for name, category, _ in results]
  with open(os.path.join(out_dir, "manifest.csv"), "w", newline="") as f:
    csv.writer(f).writerows([("file", "category")] + rows)
  meta = {"seed": seed, "seed_offset": SEED_OFFSET, "clips_per_bank": clips,
          "seconds": seconds, "sample_rate": sample_rate, "style": sf.HELDOUT.name,
          "soundfont_version": sf.VERSION,
          "banks": {e.name: {"renderer": e.kind, "bank": e.bank} for e in banks},
          "clips": {name: description for name, _, description in results}}
  with open(os.path.join(out_dir, "heldout.json"), "w") as f:
    json.dump(meta, f, indent=1)
  return rows


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python scripts/make_heldout.py",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("out_dir")
  p.add_argument("--clips", type=int, default=16, help="clips per sound bank")
  p.add_argument("--seconds", type=float, default=6.0)
  p.add_argument("--seed", type=int, default=0, help=f"compositions use seed + {SEED_OFFSET}")
  p.add_argument("--sample-rate", type=int, default=44100)
  p.add_argument("--soundfont", default=None,
                 help=f"held-out .sf2 (default: {sf.HELDOUT_SOUNDFONT} in the system folders)")
  p.add_argument("--freepats", choices=("auto", "yes", "no"), default="auto",
                 help="also render with TiMidity++ and freepats (auto: when installed)")
  p.add_argument("--workers", type=int, default=2, help="renderer processes at once")
  args = p.parse_args(argv)
  start = time.time()
  try:
    rows = make_heldout(args.out_dir, args.clips, args.seconds, args.seed, args.sample_rate,
                        args.soundfont, args.freepats, args.workers)
  except sf.SoundfontError as e:
    raise SystemExit(f"error: {e}") from None
  counts = {}
  for _, category in rows:
    counts[category] = counts.get(category, 0) + 1
  print(f"wrote {len(rows)} clips x {args.seconds:g} s ("
        + ", ".join(f"{k}: {v}" for k, v in counts.items())
        + f") and manifest.csv to {args.out_dir} in {time.time() - start:.0f} s")


if __name__ == "__main__":
  main()
