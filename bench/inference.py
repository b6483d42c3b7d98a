"""Generator forward benchmark on this machine (not a test).

Prints one JSON line per configuration: jit compile time, steady-state seconds per 1 s and
per 10 s of stereo audio, real-time factor, achieved GFLOP/s (XLA cost analysis) and the
peak RSS of the process that ran it (each configuration runs in its own subprocess).

  .venv/bin/python bench/inference.py                    # paper config and 64/2
  .venv/bin/python bench/inference.py --configs small --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CONFIGS = {
    "paper": {},
    "small": {"feature_dim": 64, "num_layers": 2},
}


def run_one(name: str, repeats: int, chunk_rows: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from apollo_jax import ApolloConfig, init_params
  from apollo_jax.model import jit_forward

  cfg = ApolloConfig(**CONFIGS[name], chunk_rows=chunk_rows)
  params = init_params(cfg, jax.random.PRNGKey(0))
  fwd = jit_forward(cfg)
  result = {"config": name, "feature_dim": cfg.feature_dim, "num_layers": cfg.num_layers,
            "chunk_rows": chunk_rows, "backend": jax.default_backend(),
            "device": str(jax.devices()[0].device_kind), "threads": os.cpu_count()}
  for seconds in (1, 10):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 2, cfg.sample_rate * seconds)),
                    jnp.float32) * 0.1
    start = time.perf_counter()
    compiled = fwd.lower(params, x).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    compiled(params, x).block_until_ready()
    times = []
    for _ in range(repeats if seconds == 1 else max(1, repeats // 2)):
      start = time.perf_counter()
      compiled(params, x).block_until_ready()
      times.append(time.perf_counter() - start)
    best = min(times)
    result[f"compile_s_{seconds}s"] = round(compile_s, 2)
    result[f"sec_per_{seconds}s_audio"] = round(best, 3)
    result[f"gflop_per_{seconds}s_audio"] = round(cost["flops"] / 1e9, 1)
    result[f"gflops_achieved_{seconds}s"] = round(cost["flops"] / 1e9 / best, 1)
  result["real_time_factor"] = round(result["sec_per_1s_audio"] / 1.0, 3)
  result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--configs", default="paper,small", help="comma-separated: paper, small")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs (best is reported)")
  parser.add_argument("--chunk-rows", type=int, default=-1,
                      help="ApolloConfig.chunk_rows (-1: the config default)")
  parser.add_argument("--one", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    from apollo_jax import ApolloConfig
    chunk = ApolloConfig().chunk_rows if args.chunk_rows < 0 else args.chunk_rows
    print(json.dumps(run_one(args.one, args.repeats, chunk)))
    return
  for name in args.configs.split(","):
    if name not in CONFIGS:
      sys.exit(f"unknown config {name!r}; choose from {sorted(CONFIGS)}")
    out = subprocess.run([sys.executable, __file__, "--one", name, "--repeats", str(args.repeats),
                          "--chunk-rows", str(args.chunk_rows)],
                         check=True, capture_output=True, text=True)
    print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
  main()
