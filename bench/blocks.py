"""Benchmark of one band-sequence block's parts, ours against the published modules.

Where the generator's step time goes, part by part (paper II-C): the band transformer, the
attention inside it alone, and one TCN unit, forward and forward + backward (parameter and
input gradients, the cotangent the output itself), on the block input of ``--seconds`` of
audio. Ours are compiled as the train step compiles them
(``training.step.step_compiler_options``, row chunks as in the step).

  python bench/blocks.py                                  # paper width, 1 s stereo
  python bench/blocks.py --rounds 5 --torch-ref apollo-ref --torch-python refvenv/bin/python \\
      --torch-jemalloc /usr/lib/x86_64-linux-gnu/libjemalloc.so.2

With ``--torch-ref DIR`` the published ``Roformer`` and ``ConvActNorm1d`` (imported from that
checkout by ``../shared/refbench/_apollo_ref.py``, in the torch venv ``--torch-python``, 2
threads) and torch's ``scaled_dot_product_attention`` (what the published ``Roformer`` calls)
are timed on the same shapes, and the two alternate ``--rounds`` times (this
machine's speed drifts between minutes): each round prints its ratios, the last lines their
geometric means. Also printed: the cores our parts keep busy (process CPU time over wall
time) and the machine's CPU pressure and steal over our timed calls. Random inputs and
weights: the cost does not depend on the values.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import resource
import statistics
import sys
import time

from apollo_jax import xla_options
from apollo_jax.data import heap

if __name__ == "__main__":  # as the step's benchmark: XLA's buffers on 2 MiB pages (heap.py)
  heap.restart_with_huge_pages()
  xla_options.use_compile_options()  # as train.py

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from apollo_jax import ApolloConfig  # noqa: E402
from apollo_jax.layers import map_rows  # noqa: E402
from apollo_jax.model import BandRoformer, TemporalUnit, attention  # noqa: E402
from apollo_jax.training import make_mesh  # noqa: E402
from apollo_jax.training.step import step_compiler_options  # noqa: E402
from _common import Load, run_published  # noqa: E402  (bench/ is the script's directory)

TORCH_SIDE = pathlib.Path(__file__).with_name("_blocks_torch.py")
PARTS = ("band transformer", "attention", "TCN unit")
MODES = ("forward", "forward+backward")


def block_shape(cfg: ApolloConfig, batch: int, channels: int, seconds: float) -> tuple[int, ...]:
  """(streams, frames, bands, features) of a block's input for that much audio."""
  samples = int(round(seconds * cfg.sample_rate))
  if samples <= cfg.n_fft // 2:
    raise ValueError(f"--seconds {seconds} is shorter than half an STFT window")
  return batch * channels, 1 + samples // cfg.hop, cfg.num_bands, cfg.feature_dim


def cpu_seconds() -> float:
  """CPU time of this process so far, user and kernel: over wall time, the cores kept busy."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def chunked_attention(cfg: ApolloConfig):
  """``(params, qkv) -> output``: :func:`apollo_jax.model.attention` over ``qkv`` (streams,
  frames, bands, heads, 3, head_dim) in the step's row chunks; no parameters (``params`` is
  ``{}``), so that it is timed like the modules."""
  def apply(params, qkv):
    del params
    return map_rows(lambda r: attention(r[..., 0, :], r[..., 1, :], r[..., 2, :],
                                        cfg.compute_dtype)[0], qkv, cfg.chunk_rows, cfg.remat)
  return apply


def compile_parts(cfg: ApolloConfig, shape: tuple[int, ...]) -> dict:
  """{(part, mode): (compiled, args)} for our band transformer, its attention and TCN unit."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
  qkv = jnp.asarray(rng.standard_normal((*shape[:3], cfg.num_heads, 3, cfg.head_dim)), jnp.float32)
  options = step_compiler_options(make_mesh())
  out = {}
  for part in PARTS:
    if part == "attention":
      apply, params, inputs = chunked_attention(cfg), {}, qkv
    else:
      module = BandRoformer(cfg) if part == "band transformer" else TemporalUnit(cfg)
      apply, params, inputs = module.apply, jax.jit(module.init)(jax.random.PRNGKey(0), x), x

    def gradients(params, x, apply=apply):
      y, vjp = jax.vjp(apply, params, x)
      return vjp(y)

    for mode, fn in zip(MODES, (apply, gradients)):
      out[(part, mode)] = (jax.jit(fn).lower(params, inputs).compile(options), (params, inputs))
  return out


def time_ours(compiled: dict, runs: int) -> tuple[dict, dict, Load]:
  """({(part, mode): median s}, {(part, mode): cores busy}, the machine's load over the calls)."""
  medians, cores = {}, {}
  mark = Load.mark()
  for key, (fn, args) in compiled.items():
    jax.block_until_ready(fn(*args))
    times, c0, t0 = [], cpu_seconds(), time.perf_counter()
    for _ in range(runs):
      t = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - t)
    cores[key] = (cpu_seconds() - c0) / (time.perf_counter() - t0)
    medians[key] = statistics.median(times)
  return medians, cores, Load.since(mark)


def time_published(args, cfg: ApolloConfig, shape: tuple[int, ...]) -> dict | None:
  """{(part, mode): median s} of the published modules, or None (the error printed)."""
  streams, frames, bands, features = shape
  cmd = [args.torch_python, str(TORCH_SIDE), "--ref-dir", args.torch_ref, "--streams",
         str(streams), "--frames", str(frames), "--bands", str(bands), "--features",
         str(features), "--heads", str(cfg.num_heads), "--kernel", str(cfg.tcn_kernel),
         "--runs", str(args.runs), "--threads", str(os.cpu_count())]
  rows = run_published(cmd, args.torch_jemalloc)
  if rows is None:
    return None
  return {(r["part"], r["mode"]): r["median_s"] for r in rows}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--feature-dim", type=int, default=256)
  p.add_argument("--seconds", type=float, default=1.0, help="audio length")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--channels", type=int, default=2)
  p.add_argument("--chunk-rows", type=int, default=-1, help="ApolloConfig.chunk_rows")
  p.add_argument("--runs", type=int, default=3, help="timed calls per part and round")
  p.add_argument("--rounds", type=int, default=1,
                 help="with --torch-ref: alternate the published modules and ours this often")
  p.add_argument("--torch-ref", help="checkout of the published code: time its modules too")
  p.add_argument("--torch-python", default=sys.executable, help="python with torch")
  p.add_argument("--torch-jemalloc", help="libjemalloc.so path: the 'tuned' reference")
  args = p.parse_args(argv)
  if min(args.runs, args.rounds, args.batch, args.channels) < 1:
    p.error("--runs, --rounds, --batch and --channels must be at least 1")
  if args.rounds > 1 and not args.torch_ref:
    p.error("--rounds alternates with the published modules: give --torch-ref")
  cfg = ApolloConfig(feature_dim=args.feature_dim, chunk_rows=args.chunk_rows)
  try:
    shape = block_shape(cfg, args.batch, args.channels, args.seconds)
  except ValueError as e:
    p.error(str(e))
  print(f"block input (streams, frames, bands, features) = {shape}, {jax.devices()[0].platform}")
  t0 = time.perf_counter()
  compiled = compile_parts(cfg, shape)
  print(f"compiled our {len(compiled)} parts in {time.perf_counter() - t0:.1f} s")

  ratios = {key: [] for key in compiled}
  for r in range(1, args.rounds + 1):
    ref = time_published(args, cfg, shape) if args.torch_ref else None
    ours, cores, load = time_ours(compiled, args.runs)
    label = f"round {r}: " if args.torch_ref and args.rounds > 1 else ""
    print(f"{label}{load} during our calls")
    for key in compiled:
      line = f"{label}{key[0]:16s} {key[1]:16s} ours {ours[key] * 1e3:7.1f} ms ({cores[key]:.2f} cores)"
      if ref is not None:
        ratios[key].append(ours[key] / ref[key])
        line += f"  published {ref[key] * 1e3:7.1f} ms  ratio {ratios[key][-1]:.3f}"
      print(line)
    if args.torch_ref and ref is None:  # its error is printed; ours stand alone
      break
  if args.torch_ref and all(ratios.values()):
    for key, rs in ratios.items():
      geo = math.exp(statistics.fmean(math.log(x) for x in rs))
      print(f"ratio ours/published, {key[0]} {key[1]}: {geo:.3f} (geometric mean of {len(rs)})")


if __name__ == "__main__":
  main()
