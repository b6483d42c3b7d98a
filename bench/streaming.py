"""Streaming benchmark: compute time per hop and its ratio to the hop duration (10 ms).

Usage (one CPU core; the flags are applied before JAX starts)::

  taskset -c 0 python bench/streaming.py --threads 1
  python bench/streaming.py --configs 64x2 --channels 1,2 --steps 300

Prints one JSON object. On a GPU backend it also searches the largest batch of streams
whose per-hop time stays under the hop duration (``--max-streams``). Parameters are random
(timing does not depend on their values). About 1-2 minutes per config on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

CONFIGS = {  # name -> ApolloConfig overrides; all causal unless --lookahead.
    "paper": {},
    "64x2": {"feature_dim": 64, "num_layers": 2},
}


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--configs", default="paper,64x2", help=f"comma list of {sorted(CONFIGS)}")
  parser.add_argument("--channels", default="1,2", help="comma list of channel counts per stream")
  parser.add_argument("--steps", type=int, default=200, help="timed hops per case (paper: 1/5)")
  parser.add_argument("--threads", type=int, default=0,
                      help="1: single-threaded XLA CPU runtime (use with taskset -c 0); 0: default")
  parser.add_argument("--lookahead", action="store_true",
                      help="also time the non-causal (published-weights) lookahead mode")
  parser.add_argument("--max-streams", type=int, default=1024,
                      help="GPU: largest batch of streams tried for the real-time search")
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  if args.threads == 1:  # Must be set before JAX initialises its CPU client.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                               " intra_op_parallelism_threads=1").strip()
  import jax
  import numpy as np

  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
  from apollo_jax import ApolloConfig, init_params
  from apollo_jax.inference import streaming as st

  def time_case(cfg, params, batch, channels, steps):
    state = st.init_state(cfg, batch, channels)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (batch, channels, cfg.hop)).astype(np.float32)
    x = jax.device_put(x)
    start = time.perf_counter()
    state, out = st.step(params, state, x)
    out.block_until_ready()
    compile_s = time.perf_counter() - start
    for _ in range(3):
      state, out = st.step(params, state, x)
    out.block_until_ready()
    times = []
    for _ in range(steps):
      t0 = time.perf_counter()
      state, out = st.step(params, state, x)
      out.block_until_ready()
      times.append(time.perf_counter() - t0)
    ms = 1000 * np.asarray(times)
    hop_ms = 1000 * cfg.hop / cfg.sample_rate
    return {"batch": batch, "channels": channels, "steps": steps,
            "per_hop_ms_median": round(float(np.median(ms)), 3),
            "per_hop_ms_p90": round(float(np.percentile(ms, 90)), 3),
            "per_hop_ms_min": round(float(ms.min()), 3),
            "ratio_to_hop": round(float(np.median(ms)) / hop_ms, 3),
            "compile_s": round(compile_s, 1)}

  gpu = jax.default_backend() != "cpu"
  results = []
  for name in args.configs.split(","):
    for causal in [True] + ([False] if args.lookahead else []):
      cfg = ApolloConfig(**CONFIGS[name], causal=causal)
      params = jax.device_put(init_params(cfg, jax.random.PRNGKey(0)))
      steps = max(10, args.steps // 5) if name == "paper" and not gpu else args.steps
      info = {"config": name, "causal": causal, "lookahead_frames": st.lookahead_frames(cfg),
              "latency_ms": st.latency_ms(cfg), "hop_ms": 1000 * cfg.hop / cfg.sample_rate}
      for channels in [int(c) for c in args.channels.split(",")]:
        results.append(info | time_case(cfg, params, 1, channels, steps))
        print(json.dumps(results[-1]), file=sys.stderr)
      if gpu:  # Largest batch of mono streams served in real time (doubling search).
        batch, best = 1, None
        while batch <= args.max_streams:
          r = info | time_case(cfg, params, batch, 1, 50)
          print(json.dumps(r), file=sys.stderr)
          if r["ratio_to_hop"] >= 1:
            break
          best, batch = r, batch * 2
        results.append(info | {"realtime_mono_streams": best and best["batch"], "at": best})

  print(json.dumps({
      "backend": jax.default_backend(), "device": str(jax.devices()[0]),
      "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "cpu_affinity": sorted(os.sched_getaffinity(0)), "results": results}, indent=1))


if __name__ == "__main__":
  main()
