"""Builds an eval folder with the paper's four categories from multitrack stem folders.

  PYTHONPATH=. python scripts/make_eval_set.py STEMS_ROOT OUT_DIR [--seconds 10] [--offset 0]

STEMS_ROOT holds one folder per track with one audio file per stem (MUSDB18-HQ test tracks,
the demo corpus of ``apollo_jax.data.demo``, ...; a ``mixture`` file is ignored). For every
track it writes a clip per category, as in the paper's Table II:

  vocal        the stem(s) whose name contains "vocal"
  single       the loudest other stem in the clip
  multi        the sum of all other stems
  multi+vocal  the sum of all stems

and ``OUT_DIR/manifest.csv`` for ``eval.py``. Clips that would be silent are left out.
"""

import argparse
import csv
import os

import numpy as np

from apollo_jax import audio
from apollo_jax.evaluation.evaluate import category_clips


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("stems_root")
  p.add_argument("out_dir")
  p.add_argument("--seconds", type=float, default=10.0)
  p.add_argument("--offset", type=float, default=0.0, help="clip start in seconds")
  p.add_argument("--sample-rate", type=int, default=44100)
  args = p.parse_args()
  os.makedirs(args.out_dir, exist_ok=True)
  sr = args.sample_rate
  start, length = int(args.offset * sr), int(args.seconds * sr)
  rows = []
  for track in sorted(os.listdir(args.stems_root)):
    folder = os.path.join(args.stems_root, track)
    if not os.path.isdir(folder):
      continue
    stems = {}
    for f in sorted(os.listdir(folder)):
      name, ext = os.path.splitext(f)
      if ext.lower() in audio.AUDIO_EXTS and name.lower() != "mixture":
        x, _ = audio.load(os.path.join(folder, f), sr)
        stems[name] = x[:, start:start + length]
    if not stems:
      continue
    channels = max(x.shape[0] for x in stems.values())
    samples = min(x.shape[1] for x in stems.values())
    stems = {n: np.broadcast_to(x[:, :samples], (channels, samples)) for n, x in stems.items()}
    for category, x in category_clips(stems).items():
      file = f"{track}_{category.replace('+', '_')}.wav"
      audio.save(os.path.join(args.out_dir, file), x, sr)
      rows.append({"file": file, "category": category})
  with open(os.path.join(args.out_dir, "manifest.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["file", "category"])
    w.writeheader()
    w.writerows(rows)
  print(f"wrote {len(rows)} clips and manifest.csv to {args.out_dir}")


if __name__ == "__main__":
  main()
