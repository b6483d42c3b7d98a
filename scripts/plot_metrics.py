"""Plots a run's training curves from its metrics.jsonl.

  python scripts/plot_metrics.py runs/demo docs/demo_training.png
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = (
    ("generator losses", ("loss_g", "loss_g_rec", "loss_g_adv", "loss_g_fm", "loss_g_logmag")),
    ("discriminator loss", ("loss_d",)),
    ("validation SI-SDR gain over the MP3 input (dB)", ("val/si_sdr_gain",)),
    ("validation LSD gain over the MP3 input (lower is better)", ("val/lsd_gain",)),
    ("validation ViSQOL gain over the MP3 input", ("val/visqol_gain",)),
)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("run_dir", help="training work directory (holds metrics.jsonl)")
  parser.add_argument("out", help="PNG to write")
  args = parser.parse_args()
  path = os.path.join(args.run_dir, "metrics.jsonl")
  if not os.path.isfile(path):
    raise SystemExit(f"error: {path} not found")
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4))
  for ax, (title, keys) in zip(axes, PANELS):
    for key in keys:
      points = [(r["step"], r[key]) for r in rows if key in r]
      if points:
        ax.plot(*zip(*points), label=key, marker="o" if key.startswith("val/") else None, ms=3)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(args.out, dpi=110)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
