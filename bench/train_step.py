"""Benchmark of one GAN train step: compile time, median step time, peak RSS.

One configuration per run (so peak RSS is its own). Examples, as in the README:

  python bench/train_step.py --feature-dim 64 --layers 2 --seconds 3          # 64/2, 3 s
  python bench/train_step.py --seconds 1                                      # paper, 1 s
  python bench/train_step.py --seconds 3 --remat                              # paper, 3 s
  python bench/train_step.py --seconds 3 --batch 8 --compute-dtype bfloat16   # on a GPU

Random audio and random weights: the step's cost does not depend on the values.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import jax
import numpy as np

from apollo_jax import ApolloConfig
from apollo_jax.training import (TrainConfig, create_train_state, make_mesh, make_train_step,
                                 shard_batch)


def peak_rss_gb() -> float:
  """Peak resident memory of this process (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--feature-dim", type=int, default=256)
  p.add_argument("--layers", type=int, default=6)
  p.add_argument("--seconds", type=float, default=3.0, help="segment length")
  p.add_argument("--batch", type=int, default=1, help="global batch (divisible by devices)")
  p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
  p.add_argument("--remat", action="store_true", help="rematerialise generator blocks")
  p.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--sn-updates", type=int, default=4, choices=(1, 4),
                 help="spectral_norm_updates_per_step")
  args = p.parse_args(argv)

  gen_cfg = ApolloConfig(feature_dim=args.feature_dim, num_layers=args.layers)
  cfg = TrainConfig(remat=args.remat, compute_dtype=args.compute_dtype,
                    spectral_norm_updates_per_step=args.sn_updates)
  mesh = make_mesh()
  samples = int(round(args.seconds * gen_cfg.sample_rate))
  rng = np.random.default_rng(0)
  target = (0.1 * rng.standard_normal((args.batch, 2, samples))).astype(np.float32)
  batch = shard_batch({"target": target, "degraded": 0.9 * target}, mesh)
  state = create_train_state(gen_cfg, cfg, jax.random.PRNGKey(0), mesh=mesh)
  step = make_train_step(gen_cfg, cfg, mesh)

  t0 = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  state, metrics = compiled(state, batch)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  audio_s = args.batch * samples / gen_cfg.sample_rate
  print(f"device: {jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})")
  print(f"config: feature_dim={args.feature_dim} layers={args.layers} segment={args.seconds:g}s "
        f"batch={args.batch} remat={args.remat} compute_dtype={args.compute_dtype} "
        f"sn_updates={args.sn_updates}")
  print(f"compile: {compile_s:.1f} s")
  print(f"step: median {med:.3f} s over {len(times)} (min {min(times):.3f}, max {max(times):.3f})")
  print(f"throughput: {audio_s / med:.3f} s of audio trained per second")
  print(f"peak RSS: {peak_rss_gb():.2f} GB")
  print(f"loss_g {float(metrics['loss_g']):.4f} loss_d {float(metrics['loss_d']):.4f}")


if __name__ == "__main__":
  main(sys.argv[1:])
