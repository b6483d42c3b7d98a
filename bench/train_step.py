"""Benchmark of one GAN train step: compile time, step time, peak RSS, and where they go.

One configuration per run (so peak RSS is its own). Examples, as in the README:

  python bench/train_step.py --feature-dim 64 --layers 2 --seconds 3          # 64/2, 3 s
  python bench/train_step.py --seconds 1                                      # paper, 1 s
  python bench/train_step.py --seconds 3 --remat                              # paper, 3 s
  python bench/train_step.py --seconds 3 --batch 8 --compute-dtype bfloat16   # on a GPU
  python bench/train_step.py --feature-dim 64 --layers 2 --seconds 3 --breakdown

Prints: XLA's memory analysis of the compiled step (argument, output, temp bytes) and its
largest buffers (XLA's buffer assignment), the compile time, the step's matmul work (FLOPs of
its dots and convolutions, loops counted by trip count: ``apollo_jax.training.flops``), the
median step time, the rate of that work as a fraction of the device's peak (dense bf16 from
the data sheet on known GPUs/TPUs, ``--peak-tflops`` to give one; on CPU the measured
2048^2 float32 matmul rate), the peak device memory where the backend reports it, the peak
RSS of the process and the machine's CPU pressure over the timed steps (/proc/pressure/cpu:
above ~0.05 other work was competing and the times are not clean) and its CPU steal (CPU time
the hypervisor gave other guests, which pressure does not show; above ~0.02 the times are not
clean either). ``--breakdown`` also
times the parts of the step as separate jitted functions (G forward, G forward+backward,
the STFTs of the losses and D, the D update's pass, the G update's D pass, the optimiser
updates); compiling them takes a few minutes more. With ``--torch-ref DIR`` the published
PyTorch step is timed in the same sitting by ``../shared/refbench/bench_ref.py`` (run with
``--torch-python``) and the ratio printed. This machine's speed drifts by 10-20 % from one
minute to the next, so with ``--rounds N`` the two alternate N times (the published step's
runs, then ``--steps`` of ours, and again), each round's ratio is printed and the ratio
reported is their geometric mean; the published step's peak RSS is the first round's (run
while this process is still small).

Random audio and random weights: the step's cost does not depend on the values.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import glob
import os
import pathlib
import resource
import shutil
import statistics
import sys
import tempfile
import time

from apollo_jax import xla_options
from apollo_jax.data import heap

if __name__ == "__main__":  # as train.py: XLA's per-step buffers on 2 MiB pages (see heap.py)
  heap.restart_with_huge_pages()
  xla_options.use_compile_options()  # as train.py
_DUMP = tempfile.mkdtemp(prefix="apollo_bench_hlo_")
atexit.register(shutil.rmtree, _DUMP, ignore_errors=True)
# XLA writes its buffer assignment report only when dumping; nothing else is dumped.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_dump_to={_DUMP} --xla_dump_hlo_module_re=.*jit_step.*").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from apollo_jax import Apollo, ApolloConfig  # noqa: E402
from apollo_jax.gan.discriminator import deinterleave, interleave  # noqa: E402
from apollo_jax.spectral import multi_stft  # noqa: E402
from apollo_jax.gan.losses import feature_matching_loss, lsgan_d_loss, lsgan_g_loss  # noqa: E402
from apollo_jax.training import (TrainConfig, create_train_state, make_mesh,  # noqa: E402
                                 make_train_step, shard_batch)
from apollo_jax.training.flops import bf16_peak_tflops, matmul_flops  # noqa: E402
from apollo_jax.training.state import make_optimizers  # noqa: E402
from apollo_jax.training.step import step_compiler_options, step_discriminator  # noqa: E402
from _common import Load, run_published  # noqa: E402  (bench/ is the script's directory)

REFBENCH = pathlib.Path(__file__).resolve().parents[2] / "shared" / "refbench" / "bench_ref.py"


def peak_rss_gb() -> float:
  """Peak resident memory of this process (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def rss_gb() -> float:
  """The process's resident memory now (VmRSS)."""
  with open("/proc/self/status") as f:
    return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 2 ** 20


def matmul_gflops(n: int = 2048, repeats: int = 10, dtype=jnp.float32) -> float:
  """GFLOP/s of a plain ``n x n`` matmul of random ``dtype`` values (median of ``repeats``,
  see :func:`timed`): this machine's speed at the moment, printed beside the step times
  because it drifts between and within sittings; on accelerators (bf16, n=8192) the rate
  the step's utilisation is also given against. Random, not constant, values: a GPU
  multiplies zeros ~10 % faster."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
  median_s = timed(lambda a: a @ a, a, repeats=repeats)[1]
  return 2 * n ** 3 / median_s / 1e9


def largest_buffers(n: int) -> list[str]:
  """The ``n`` largest allocations of the compiled step (XLA's memory-usage report)."""
  reports = sorted(glob.glob(os.path.join(_DUMP, "*jit_step*memory-usage-report.txt")),
                   key=os.path.getmtime)
  if not reports:
    return []
  rows = []
  for line in pathlib.Path(reports[-1]).read_text().splitlines():
    parts = [p.strip() for p in line.split(";")]
    if len(parts) == 5 and parts[1].endswith("B") and parts[1][0].isdigit():
      rows.append((parts[1], parts[4]))
  return [f"{size:>10}  {shapes[:110]}" for size, shapes in rows[:n]]


def timed(fn, *args, repeats: int, options=None) -> tuple[float, float, list[float]]:
  """(compile seconds, median seconds, all times) of ``jax.jit(fn)(*args)`` compiled with
  the XLA ``options``."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn, compiler_options=options).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return compile_s, statistics.median(times), times


def breakdown(gen_cfg: ApolloConfig, cfg: TrainConfig, state, target, degraded, repeats: int,
              mesh):
  """Times the parts of the step as separate jitted functions, compiled with the step's
  options on ``mesh``: (name, compile s, median s)."""
  gen = Apollo(gen_cfg)
  disc = step_discriminator(gen_cfg, cfg)
  groups = 2 if cfg.spectral_norm_updates_per_step == 4 else 1
  variables = {"params": state.disc_params, "spectral": state.disc_spectral}
  forward = lambda p, x: gen.apply({"params": p}, x)
  fake = jax.jit(forward)(state.gen_params, degraded)
  pairs = interleave(fake, target)
  spectra = jax.jit(lambda x: multi_stft(x, cfg.windows))(pairs)

  def g_backward(p, x, ct):
    out, vjp = jax.vjp(lambda p: forward(p, x), p)
    return vjp(ct)

  def stfts(x, cts):
    out, vjp = jax.vjp(lambda x: multi_stft(x, cfg.windows), x)
    return vjp(cts)

  def d_update_pass(params, spectral, pairs, spectra):
    def loss(params):
      out, _ = disc.apply({"params": params, "spectral": spectral}, pairs, train=True,
                          spectra=spectra, groups=groups, mutable=["spectral"])
      (fake_scores, _), (real_scores, _) = deinterleave(out, 2)
      return lsgan_d_loss(real_scores, fake_scores)
    return jax.grad(loss)(params)

  def g_update_pass(variables, pairs, spectra):
    def loss(pairs, spectra):
      out, _ = disc.apply(variables, pairs, train=True, spectra=spectra, groups=groups,
                          mutable=["spectral"])
      (fake_scores, fake_feats), (_, real_feats) = deinterleave(out, 2)
      return lsgan_g_loss(fake_scores) + feature_matching_loss(fake_feats, real_feats)
    return jax.grad(loss, argnums=(0, 1))(pairs, spectra)

  tx_g, tx_d = make_optimizers(cfg)

  def optimisers(state):
    up_g, _ = tx_g.update(state.gen_params, state.gen_opt_state, state.gen_params)
    up_d, _ = tx_d.update(state.disc_params, state.disc_opt_state, state.disc_params)
    return up_g, up_d

  parts = [
      ("G forward", forward, (state.gen_params, degraded)),
      ("G forward+backward", g_backward, (state.gen_params, degraded, fake)),
      ("STFTs (7 windows, fake+real) fwd+bwd", stfts, (pairs, spectra)),
      ("D update: D pass fwd+bwd (params)", d_update_pass,
       (state.disc_params, state.disc_spectral, pairs, spectra)),
      ("G update: D pass fwd+bwd (input)", g_update_pass, (variables, pairs, spectra)),
      ("optimiser updates (G and D)", optimisers, (state,)),
  ]
  options = step_compiler_options(mesh)  # as the step is compiled
  for name, fn, args in parts:
    compile_s, median, _ = timed(fn, *args, repeats=repeats, options=options)
    yield name, compile_s, median


def torch_reference(args) -> dict | None:
  """The published step timed by refbench in a subprocess (its own peak RSS)."""
  cmd = [args.torch_python, str(REFBENCH), "--ref-dir", args.torch_ref, "--mode", "train",
         "--feature-dim", str(args.feature_dim), "--layer", str(args.layers),
         "--seconds", str(args.seconds), "--batch", str(args.batch), "--threads",
         str(os.cpu_count()), "--runs", str(max(2, min(args.steps, 3)))]
  return run_published(cmd, args.torch_jemalloc)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--feature-dim", type=int, default=256)
  p.add_argument("--layers", type=int, default=6)
  p.add_argument("--seconds", type=float, default=3.0, help="segment length")
  p.add_argument("--batch", type=int, default=1, help="global batch (divisible by devices)")
  p.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step "
                 "(per round)")
  p.add_argument("--rounds", type=int, default=1,
                 help="with --torch-ref: alternate the published step and ours this many times")
  p.add_argument("--remat", action="store_true", help="ApolloConfig.remat (training memory)")
  p.add_argument("--chunk-rows", type=int, default=-1, help="ApolloConfig.chunk_rows")
  p.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16"))
  p.add_argument("--sn-updates", type=int, default=4, choices=(1, 4),
                 help="spectral_norm_updates_per_step")
  p.add_argument("--d-hidden", type=int, help="TrainConfig.d_hidden (default: 8, or the demo's)")
  p.add_argument("--demo", action="store_true", help="the configs/apollo.py:demo model and step")
  p.add_argument("--breakdown", action="store_true", help="also time the parts of the step")
  p.add_argument("--buffers", type=int, default=8, help="largest buffers to list")
  p.add_argument("--torch-ref", help="checkout of the published code: time its step too")
  p.add_argument("--torch-python", default=sys.executable, help="python with torch (refbench)")
  p.add_argument("--torch-jemalloc", help="libjemalloc.so path: the 'tuned' reference")
  p.add_argument("--peak-tflops", type=float,
                 help="the device's matmul peak for the utilisation line (default: dense bf16 "
                      "of known GPUs/TPUs; on CPU the measured float32 matmul rate)")
  args = p.parse_args(argv)
  if args.rounds < 1 or args.steps < 1:
    p.error("--rounds and --steps must be at least 1")
  if args.rounds > 1 and not args.torch_ref:
    p.error("--rounds alternates with the published step: give --torch-ref")

  if args.demo:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from configs.apollo import get_config
    c = get_config("demo")
    gen_cfg = ApolloConfig.from_dict(c.model.to_dict())
    # Memory/speed flags given on the command line override the config's own.
    given = {"chunk_rows": args.chunk_rows != -1, "remat": args.remat,
             "compute_dtype": args.compute_dtype != "float32"}
    gen_cfg = dataclasses.replace(gen_cfg, **{k: getattr(args, k) for k, on in given.items() if on})
    cfg = TrainConfig.from_dict(c.train.to_dict())
    args.feature_dim, args.layers = gen_cfg.feature_dim, gen_cfg.num_layers
    args.seconds, args.batch = c.data.segment_seconds, c.global_batch_size
    args.sn_updates = cfg.spectral_norm_updates_per_step
  else:
    gen_cfg = ApolloConfig(feature_dim=args.feature_dim, num_layers=args.layers,
                           remat=args.remat, chunk_rows=args.chunk_rows,
                           compute_dtype=args.compute_dtype)
    cfg = TrainConfig(spectral_norm_updates_per_step=args.sn_updates)
  if args.d_hidden is not None:
    cfg = dataclasses.replace(cfg, d_hidden=args.d_hidden)
  # The reference first, while this process is small: a child's peak RSS (ru_maxrss)
  # starts from the pages it shared with its parent.
  ref = torch_reference(args) if args.torch_ref else None
  refs = [ref]  # the published step's run before each round of ours
  rounds = args.rounds if ref else 1
  mesh = make_mesh()
  samples = int(round(args.seconds * gen_cfg.sample_rate))
  rng = np.random.default_rng(0)
  target = (0.1 * rng.standard_normal((args.batch, cfg.channels, samples))).astype(np.float32)
  batch = shard_batch({"target": target, "degraded": 0.9 * target}, mesh)
  state = create_train_state(gen_cfg, cfg, jax.random.PRNGKey(0), mesh=mesh)
  step = make_train_step(gen_cfg, cfg, mesh)

  print(f"device: {jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{os.cpu_count()} CPUs; GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
  print(f"config: feature_dim={args.feature_dim} layers={args.layers} segment={args.seconds:g}s "
        f"batch={args.batch} remat={gen_cfg.remat} chunk_rows={gen_cfg.chunk_rows} "
        f"compute_dtype={args.compute_dtype} sn_updates={args.sn_updates} d_hidden={cfg.d_hidden}",
        flush=True)
  t0 = time.perf_counter()
  traced = step.trace(state, batch)
  compiled = traced.lower().compile()
  compile_s = time.perf_counter() - t0
  flops, loops = matmul_flops(traced.jaxpr)
  xla_flops = (compiled.cost_analysis() or {}).get("flops", float("nan"))
  heap.release_freed_memory()  # as train.py does before its first step
  mem = compiled.memory_analysis()
  gib = lambda b: f"{b / 2 ** 30:.2f} GiB"
  print(f"compile: {compile_s:.1f} s (peak RSS so far {peak_rss_gb():.2f} GB, "
        f"{rss_gb():.2f} GB after releasing the compiler's freed memory)")
  if mem is not None:
    print(f"XLA memory: arguments {gib(mem.argument_size_in_bytes)}, outputs "
          f"{gib(mem.output_size_in_bytes)}, temp {gib(mem.temp_size_in_bytes)}")
  for row in largest_buffers(args.buffers):
    print(f"  buffer {row}")
  print(f"work: {flops / 1e12:.4g} TFLOP per step in dots and convolutions (loops by trip "
        f"count{f'; {loops} while loops counted once' if loops else ''}); XLA's cost analysis "
        f"{xla_flops / 1e12:.4g} TFLOP (all ops, each loop body once)")

  state, metrics = compiled(state, batch)  # warm-up
  jax.block_until_ready(metrics)
  speed_before = matmul_gflops()
  times, round_ratios = [], []
  load = Load(0.0, 0.0, 0.0)
  for r in range(rounds):
    if r:  # The published step again, right before this round's steps of ours.
      refs.append(torch_reference(args))
      if refs[-1] is None:
        break
      state, metrics = compiled(state, batch)  # warm-up again, as the published step has one
      jax.block_until_ready(metrics)
    round_times = []
    mark = Load.mark()
    for _ in range(args.steps):
      t0 = time.perf_counter()
      state, metrics = compiled(state, batch)
      jax.block_until_ready(metrics)
      round_times.append(time.perf_counter() - t0)
    round_load = Load.since(mark)
    times += round_times
    load += round_load
    if rounds > 1:
      ref_med = refs[r]["median_s"]
      round_ratios.append(statistics.median(round_times) / ref_med)
      steal = "" if round_load.stolen_s is None else f" (cpu steal {round_load.steal()})"
      print(f"round {r + 1}: ours median {statistics.median(round_times):.3f} s, published "
            f"{ref_med:.3f} s, ratio {round_ratios[-1]:.3f}{steal}", flush=True)
  speed_after = matmul_gflops()
  med = statistics.median(times)
  audio_s = args.batch * samples / gen_cfg.sample_rate
  print(f"step: median {med:.3f} s over {len(times)} (min {min(times):.3f}, max {max(times):.3f})")
  print(f"throughput: {audio_s / med:.3f} s of audio trained per second")
  kind = jax.devices()[0].device_kind
  # Per device on accelerators; on CPU the whole machine (fake devices share its cores).
  cpu = jax.default_backend() == "cpu"
  if args.peak_tflops:
    peak, of = args.peak_tflops, f"the given peak, {args.peak_tflops:g} TFLOP/s"
  elif cpu:
    peak = (speed_before + speed_after) / 2 / 1e3
    of = "this machine's 2048^2 float32 matmul rate (below)"
  else:
    peak = bf16_peak_tflops(kind)
    of = f"the {kind}'s dense bf16 peak, {peak:g} TFLOP/s" if peak else ""
  rate = flops / (1 if cpu else jax.device_count()) / med / 1e12
  print(f"work rate: {rate:.4g} TFLOP/s{'' if cpu else ' per device'}"
        + (f", {100 * rate / peak:.1f} % of {of}" if peak else
           f" (peak of {kind!r} unknown: --peak-tflops)"))
  if not cpu:  # What the chip gives a plain large matmul here, beside the data sheet's.
    bf16 = matmul_gflops(8192, dtype=jnp.bfloat16) / 1e3
    print(f"work rate: {100 * rate / bf16:.1f} % of this device's measured 8192^2 bf16 "
          f"matmul rate, {bf16:.0f} TFLOP/s")
  stats = jax.local_devices()[0].memory_stats()
  if stats and "peak_bytes_in_use" in stats:
    print(f"peak device memory: {gib(stats['peak_bytes_in_use'])} (device 0)")
  print(f"peak RSS: {peak_rss_gb():.2f} GB")
  print(f"cpu pressure during the steps: {load.pressure()} (fraction of time some task waited)")
  print(f"cpu steal during the steps: {load.steal()} (CPU-seconds per second the hypervisor ran "
        f"other guests, of {os.cpu_count()} CPUs)")
  print(f"machine speed: 2048^2 float32 matmul at {speed_before:.0f} GFLOP/s before the steps, "
        f"{speed_after:.0f} after")
  print(f"loss_g {float(metrics['loss_g']):.4f} loss_d {float(metrics['loss_d']):.4f}", flush=True)

  if args.breakdown:
    print("parts (separately jitted; compile s, median s):")
    host_state = jax.device_get(state)
    for name, c_s, m_s in breakdown(gen_cfg, cfg, host_state, jnp.asarray(target),
                                    jnp.asarray(0.9 * target), repeats=max(2, args.steps // 2),
                                    mesh=mesh):
      print(f"  {name:40s} compile {c_s:6.1f} s  median {m_s:7.3f} s", flush=True)
  if ref is not None:
    print(f"torch reference: median {ref['median_s']:.3f} s, peak RSS "
          f"{ref['peak_rss_mib'] / 1024:.2f} GB, cpu pressure {ref.get('cpu_pressure_some_frac')}")
    time_ratio = (statistics.geometric_mean(round_ratios) if round_ratios
                  else med / ref['median_s'])
    print(f"ratio apollo-jax / torch: time {time_ratio:.2f}"
          + (f" (geometric mean of {len(round_ratios)} alternated rounds)" if round_ratios else "")
          + f", memory {peak_rss_gb() / (ref['peak_rss_mib'] / 1024):.2f}")


if __name__ == "__main__":
  main(sys.argv[1:])
