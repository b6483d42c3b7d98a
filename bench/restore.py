"""Benchmark of `python -m apollo_jax.restore`: peak memory, throughput, chunking error.

  python bench/restore.py --minutes 10                 # the target: 10-minute stereo file
  python bench/restore.py --minutes 0.5 --snr-seconds 30   # what fits in ~10 min on 2 cores
  python bench/restore.py --config tiny --minutes 10 --snr-seconds 0   # pipeline memory only

What it does:
1. Makes random generator weights for ``--config`` (paper: 16.5 M params; timing does not
   depend on the values) and saves them as .safetensors, then writes ``--minutes`` of
   synthetic stereo music at 44.1 kHz as ``--input-format`` (MP3 via apollo_jax.data.codecs).
2. Bare model forward: times the jitted generator on the chunk shape the CLI uses,
   ``(batch_chunks, 1, chunk)``, after compiling it.
3. Runs the CLI in a child process (default chunking) and reports its peak RSS
   (VmHWM of /proc/self/status at its end, Linux: the whole process, JAX runtime included),
   its wall time and the processing time from its summary line (checkpoint load and
   compile excluded). Throughput is compared with the bare forward (a) on exactly the chunks
   the CLI ran (pipeline overhead: decode, overlap-add, write) and (b) on the audio itself
   (also counting the overlap each chunk recomputes).
4. With ``--snr-seconds`` > 0: restores that many seconds of stereo whole and chunked (default
   settings) with ``--snr-checkpoint`` (default: the small parity model, feature_dim 64,
   2 layers) and prints the SNR of chunked against whole.

Timings on a shared CPU vary between runs; the bare forward is timed right before and
right after the CLI so that drift shows.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from apollo_jax import ApolloConfig, audio, init_params  # noqa: E402
from apollo_jax.model import jit_forward  # noqa: E402
from apollo_jax.data import codecs  # noqa: E402
from apollo_jax.checkpoints import load_generator, save_torch_generator  # noqa: E402
from apollo_jax.inference.chunked import (DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS,  # noqa: E402
                                          ChunkedRestorer, restore_array)

CONFIGS = {"paper": ApolloConfig(), "tiny": ApolloConfig(feature_dim=16, num_layers=1, num_heads=2)}


def synth_music(seconds: float, rate: int = 44100, seed: int = 0) -> np.ndarray:
  """Stereo test signal, float32 (2, samples): notes with harmonics, noise bursts, built per second."""
  rng = np.random.default_rng(seed)
  n = int(seconds * rate)
  out = np.empty((2, n), np.float32)
  t = np.arange(rate) / rate
  for start in range(0, n, rate):
    f0 = rng.choice([110.0, 147.0, 196.0, 262.0, 330.0])
    env = np.exp(-t * rng.uniform(2, 8))
    note = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 16))
    burst = rng.standard_normal((2, rate)) * np.exp(-t * 30)
    sec = 0.1 * env * note + 0.05 * burst
    out[:, start:start + rate] = sec[:, :min(rate, n - start)]
  return out


# Runs the CLI, then prints the process's peak RSS. VmHWM counts only this program: the
# getrusage maxima would also count the pages of this (large) benchmark process that the
# child shared between fork and exec.
_CLI_WITH_PEAK = ("import sys; from apollo_jax.cli.restore import main; code = main(sys.argv[1:]); "
                  "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]); "
                  "sys.exit(code)")


def bare_forward(cfg, params, batch: int, length: int, reps: int) -> float:
  """Seconds per call of the jitted forward on ``(batch, 1, length)`` (compiled first)."""
  x = np.random.default_rng(0).standard_normal((batch, 1, length)).astype(np.float32) * 0.1
  f = jit_forward(cfg)
  jax.block_until_ready(f(params, x))  # compile + first run
  t = time.perf_counter()
  for _ in range(reps):
    jax.block_until_ready(f(params, x))
  return (time.perf_counter() - t) / reps


def snr_db(ref: np.ndarray, est: np.ndarray) -> float:
  return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - est) ** 2), 1e-30)))


def chunking_snr(checkpoint: str, seconds: float, chunk: float, overlap: float) -> None:
  """SNR of chunked against whole restoration, for a length that is a whole number of STFT
  hops (the last chunk ends exactly at the end) and for one that is not (the last chunk
  mirrors < 1 hop past the end)."""
  cfg, params = load_generator(checkpoint)
  half, tenth = cfg.sample_rate // 2, cfg.sample_rate // 10
  for extra in (0, 123):
    x = synth_music(seconds, cfg.sample_rate, seed=1)
    x = np.concatenate([x, x[:, :extra]], axis=1)
    t = time.perf_counter()
    whole = restore_array(params, cfg, x, chunk_seconds=None)
    t_whole = time.perf_counter() - t
    t = time.perf_counter()
    chunked = restore_array(params, cfg, x, chunk_seconds=chunk, overlap_seconds=overlap)
    t_chunked = time.perf_counter() - t
    err = ((whole - chunked) ** 2).sum(0)
    ref = (whole ** 2).sum(0)
    worst = min(10 * np.log10(ref[i:i + tenth].sum() / max(err[i:i + tenth].sum(), 1e-30))
                for i in range(0, len(err) - tenth + 1, tenth))
    print(f"chunked vs whole, {x.shape[1]} samples ({x.shape[1] / cfg.sample_rate:.3f} s, "
          f"{'a whole' if x.shape[1] % cfg.hop == 0 else 'not a whole'} number of hops) stereo, "
          f"{os.path.basename(checkpoint)} (feature_dim={cfg.feature_dim}, num_layers="
          f"{cfg.num_layers}), chunk {chunk:g} s, overlap {overlap:g} s: SNR "
          f"{snr_db(whole, chunked):.1f} dB overall, "
          f"{snr_db(whole[:, :-half], chunked[:, :-half]):.1f} dB without the last 0.5 s, "
          f"worst 0.1 s window {worst:.1f} dB (whole {t_whole:.1f} s, chunked {t_chunked:.1f} s)",
          flush=True)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", choices=sorted(CONFIGS), default="paper")
  p.add_argument("--minutes", type=float, default=10.0, help="length of the stereo test file")
  p.add_argument("--input-format", choices=["mp3", "wav", "flac"], default="mp3")
  p.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS)
  p.add_argument("--overlap-seconds", type=float, default=DEFAULT_OVERLAP_SECONDS)
  p.add_argument("--batch-chunks", type=int, default=1)
  p.add_argument("--baseline-reps", type=int, default=2, help="timed bare forward calls")
  p.add_argument("--snr-seconds", type=float, default=30.0, help="0 skips the SNR measurement")
  p.add_argument("--snr-checkpoint",
                 default=os.environ.get("APOLLO_PARITY_DIR", os.path.join(ROOT, "..", "shared", "parity"))
                 + "/apollo_small.safetensors")
  args = p.parse_args()

  cfg = CONFIGS[args.config]
  work = tempfile.mkdtemp(prefix="apollo-bench-")
  print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs; "
        f"config {args.config}; files in {work}", flush=True)

  params = jax.tree.map(np.asarray, init_params(cfg, jax.random.PRNGKey(0)))
  ckpt = os.path.join(work, f"{args.config}.safetensors")
  save_torch_generator(cfg, params, ckpt)
  seconds = args.minutes * 60
  x = synth_music(seconds, cfg.sample_rate)
  src = os.path.join(work, f"input.{args.input_format}")
  if args.input_format == "mp3":
    with open(src, "wb") as f:
      f.write(codecs.encode(x, cfg.sample_rate, "mp3", bitrate=128))
  else:
    audio.save(src, x, cfg.sample_rate)
  del x
  print(f"input: {seconds:.0f} s stereo {args.input_format}, {os.path.getsize(src) / 1e6:.1f} MB",
        flush=True)

  restorer = ChunkedRestorer(cfg, params, args.chunk_seconds, args.overlap_seconds,
                             args.batch_chunks)
  samples = int(seconds * cfg.sample_rate)
  chunks = 2 * restorer.num_chunks(samples)
  calls = math.ceil(chunks / args.batch_chunks)
  chunk_s = restorer.chunk / cfg.sample_rate
  del restorer
  before = bare_forward(cfg, params, args.batch_chunks, int(chunk_s * cfg.sample_rate),
                        args.baseline_reps)
  print(f"bare forward ({args.batch_chunks}, 1, {chunk_s:g} s): {before:.2f} s per call, "
        f"{before / (args.batch_chunks * chunk_s):.3f} s per channel-second", flush=True)

  out = os.path.join(work, "restored.wav")
  cmd = [sys.executable, "-c", _CLI_WITH_PEAK, src, "-o", out, "--checkpoint", ckpt,
         "--chunk-seconds", str(args.chunk_seconds), "--overlap-seconds",
         str(args.overlap_seconds), "--batch-chunks", str(args.batch_chunks), "--quiet"]
  t = time.perf_counter()
  r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                     env={**os.environ, "PYTHONPATH": ROOT})
  wall = time.perf_counter() - t
  if r.returncode:
    sys.exit(f"restore failed ({r.returncode}): {r.stderr}")
  peak_mb = int(re.search(r"VmHWM:\s*(\d+) kB", r.stdout).group(1)) / 1024
  summary = r.stdout.strip().splitlines()[-2]
  processing = float(re.search(r"audio in ([\d.]+) s", summary).group(1))
  print(f"CLI: {summary}", flush=True)
  after = bare_forward(cfg, params, args.batch_chunks, int(chunk_s * cfg.sample_rate), 1)
  print(f"bare forward again after the CLI: {after:.2f} s per call", flush=True)

  bare = (before + after) / 2
  same_chunks = calls * bare
  same_audio = 2 * seconds * bare / (args.batch_chunks * chunk_s)
  print(f"RESULT config={args.config} file={seconds:.0f} s stereo {args.input_format} "
        f"chunk={chunk_s:g} s overlap={args.overlap_seconds:g} s batch={args.batch_chunks}: "
        f"peak RSS {peak_mb:.0f} MB (whole CLI process); CLI wall {wall:.1f} s, processing "
        f"{processing:.1f} s; bare forward on the same {calls} chunk calls {same_chunks:.1f} s "
        f"-> pipeline overhead {100 * (processing / same_chunks - 1):+.1f}%; bare forward on "
        f"the audio without overlap {same_audio:.1f} s -> {100 * (processing / same_audio - 1):+.1f}%",
        flush=True)

  if args.snr_seconds > 0:
    chunking_snr(args.snr_checkpoint, args.snr_seconds, args.chunk_seconds, args.overlap_seconds)


if __name__ == "__main__":
  main()
