"""Scoring cost per 10 s stereo clip, per metric (what eval.py spends per row besides restoring).

  PYTHONPATH=. python scripts/bench_metrics.py [--seconds 10] [--repeats 3]

The clip is synthetic (harmonics + noise) degraded by MP3 at 32 kbit/s; each metric is timed
after one warm-up call (ViSQOL's first call also compiles its numba kernels: reported apart).
"""

import argparse
import time

import numpy as np

from apollo_jax.data import codecs
from apollo_jax.evaluation import metrics


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--seconds", type=float, default=10.0)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  sr = 44100
  t = np.arange(int(args.seconds * sr)) / sr
  rng = np.random.default_rng(0)
  tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate([110, 440, 1320, 3960, 7920, 15840], 1))
  clean = np.stack([0.2 * tone + 0.02 * rng.standard_normal(t.shape) for _ in range(2)]).astype(np.float32)
  est = codecs.degrade(clean, sr, "mp3", 32)
  total = total_cpu = 0.0
  for name in metrics.METRICS:
    t0 = time.perf_counter()
    value = metrics.score(clean, est, sr, (name,))[name]
    first = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(args.repeats):
      t0, c0 = time.perf_counter(), time.process_time()
      metrics.score(clean, est, sr, (name,))
      times.append(time.perf_counter() - t0)
      cpu.append(time.process_time() - c0)
    best = min(times)
    total += best
    total_cpu += min(cpu)
    print(f"{name:7s} {value:8.3f}   first call {first:6.2f} s   then {best:5.2f} s wall, "
          f"{min(cpu):5.2f} s CPU (best of {args.repeats})")
  print(f"all metrics: {total:.2f} s wall, {total_cpu:.2f} s CPU per {args.seconds:g} s stereo clip")


if __name__ == "__main__":
  main()
