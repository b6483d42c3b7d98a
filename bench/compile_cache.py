"""What the persistent compilation cache saves on a relaunch (not a test).

Runs the first call of the training step (what ``time/compile_s`` reports) in two fresh
processes that share an empty cache folder: the first compiles and writes the cache, the
second loads it. Prints one JSON line per process: CPU and wall seconds of the first call,
JAX's tracing / lowering / backend-compile times, cache hits and misses, and the machine's
CPU pressure and steal over each process's run. CPU time is the comparable number on a
shared machine.

  .venv/bin/python bench/compile_cache.py                     # demo config
  .venv/bin/python bench/compile_cache.py --config configs/apollo.py:paper --seconds 1
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from _common import Load  # noqa: E402  (bench/ is the script's directory)


def first_call(config: str, seconds: float | None, cache_dir: str) -> dict:
  """Builds the step of ``config`` and times its first call (in this process)."""
  import jax
  import numpy as np
  from jax import monitoring

  from apollo_jax import compile_cache
  from apollo_jax.training import loop
  from apollo_jax.training.state import create_train_state
  from apollo_jax.training.step import make_mesh, make_train_step, shard_batch

  durations, events = collections.defaultdict(float), collections.Counter()
  monitoring.register_event_duration_secs_listener(
      lambda name, d, **kw: durations.__setitem__(name, durations[name] + d))
  monitoring.register_event_listener(lambda name, **kw: events.update([name]))
  compile_cache.setup(cache_dir)
  path, _, variant = config.partition(":")
  sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
  module = __import__(os.path.splitext(os.path.basename(path))[0])
  c = module.get_config(variant or None)
  gen_cfg, train_cfg = loop.model_config(c), loop.train_config(c)
  mesh = make_mesh()
  state = create_train_state(gen_cfg, train_cfg, jax.random.PRNGKey(0), mesh=mesh)
  samples = int((seconds or c.data.segment_seconds) * gen_cfg.sample_rate)
  zeros = np.zeros((c.global_batch_size, 2, samples), np.float32)
  batch = shard_batch({"target": zeros, "degraded": zeros}, mesh)
  step = make_train_step(gen_cfg, train_cfg, mesh)
  before = dict(durations)
  cpu, wall = time.process_time(), time.perf_counter()
  jax.block_until_ready(step(state, batch))
  cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
  out = {"first_call_cpu_s": round(cpu, 1), "first_call_wall_s": round(wall, 1)}
  for name in ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration",
               "backend_compile_duration", "cache_retrieval_time_sec"):
    key = next((k for k in durations if k.endswith(name)), None)
    if key:
      out[name] = round(durations[key] - before.get(key, 0.0), 1)
  out["cache_hits"] = events["/jax/compilation_cache/cache_hits"]
  out["cache_misses"] = events["/jax/compilation_cache/cache_misses"]
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="configs/apollo.py:demo")
  p.add_argument("--seconds", type=float, help="segment length (default: the config's)")
  p.add_argument("--child", help=argparse.SUPPRESS)  # cache folder, in a child process
  args = p.parse_args()
  if args.child:
    print(json.dumps(first_call(args.config, args.seconds, args.child)))
    return
  with tempfile.TemporaryDirectory() as cache_dir:
    for run in ("cold", "warm"):
      cmd = [sys.executable, os.path.abspath(__file__), "--config", args.config, "--child",
             cache_dir] + (["--seconds", str(args.seconds)] if args.seconds else [])
      env = {k: v for k, v in os.environ.items() if k != "APOLLO_JAX_COMPILE_CACHE"}
      mark = Load.mark()
      out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
      load = Load.since(mark)
      if out.returncode:
        sys.exit(f"{run} run failed:\n{out.stderr[-3000:]}")
      result = json.loads(out.stdout.strip().splitlines()[-1])
      print(json.dumps({"run": run, "config": args.config, **result,
                        "cpu_pressure": load.pressure(), "cpu_steal": load.steal()}),
            flush=True)


if __name__ == "__main__":
  main()
