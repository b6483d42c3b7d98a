"""Data pipeline throughput: seconds of 44.1 kHz stereo training audio made per second.

    python bench/data.py [--batch 8] [--batches 12] [--workers 2] [--mp3-quality 3]

Runs the training pipeline (demo corpus, 3 s stereo segments, MP3 at a random bitrate per
item) in-process (one read thread, then ``--workers`` threads), then with ``--workers`` grain
worker processes, and prints:
  - seconds of audio per wall-clock second, and per CPU-second (= per fully used core);
  - the CPU time per item split into reading/mixing and the MP3 round trip, for the chosen
    LAME quality and for -q 7 (about twice as fast, no noise shaping);
  - the peak memory of the pipeline with workers (sum over the main process and its
    workers of the proportional set size, sampled every 50 ms; RSS sum for reference).
Targets: >= 60 s of audio per second per core; <= 1 GB with 2 workers.
The demo corpus is generated on first use into --cache-dir (not timed).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from apollo_jax.data import codecs  # noqa: E402
from apollo_jax.data import default_data_config, heap, mixing, pipeline  # noqa: E402
from _common import Load  # noqa: E402  (bench/ is the script's directory)


def _children(pid: int) -> list[int]:
  out = []
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          ppid = int(f.read().rsplit(")", 1)[1].split()[1])
      except (OSError, IndexError, ValueError):
        continue
      if ppid == pid:
        out += [int(entry)] + _children(int(entry))
  return out


def _memory(pid: int) -> tuple[int, int]:
  """(PSS, RSS) in bytes of ``pid`` and its descendants."""
  pss = rss = 0
  for p in [pid] + _children(pid):
    try:
      with open(f"/proc/{p}/smaps_rollup") as f:
        for line in f:
          if line.startswith("Pss:"):
            pss += int(line.split()[1]) * 1024
          elif line.startswith("Rss:"):
            rss += int(line.split()[1]) * 1024
    except OSError:
      pass
  return pss, rss


class PeakMemory(threading.Thread):
  def __init__(self):
    super().__init__(daemon=True)
    self.peak_pss = self.peak_rss = 0
    self.done = threading.Event()

  def run(self):
    while not self.done.wait(0.05):
      pss, rss = _memory(os.getpid())
      self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)


def run(cfg, batch: int, batches: int, index) -> tuple[float, float, int]:
  """(wall seconds, CPU seconds of this process, items) for ``batches`` after one warm-up."""
  it = pipeline.make_train_iterator(cfg, seed=0, global_batch_size=batch, index=index)
  next(it)  # warm-up: worker start, first reads
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(batches):
    b = next(it)
  wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
  assert b["target"].shape == (batch, 2, int(cfg.segment_seconds * cfg.sample_rate))
  it.close()
  return wall, cpu, batch * batches


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--batches", type=int, default=12)
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--mp3-quality", type=int, default=3)
  p.add_argument("--cache-dir", default="~/.cache/apollo_jax")
  args = p.parse_args()

  cfg = default_data_config()
  cfg.cache_dir = args.cache_dir
  cfg.mp3_quality = args.mp3_quality
  seg = cfg.segment_seconds
  mark = Load.mark()
  index = pipeline.train_index(cfg)
  load = Load.since(mark)
  print(f"demo corpus: {len(index.tracks)} tracks ({load.wall_s:.1f} s to prepare); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {load} while preparing")
  print(f"segments: {seg:g} s stereo at {cfg.sample_rate} Hz, codec mp3 (LAME -q "
        f"{cfg.mp3_quality}), bitrates {tuple(cfg.bitrates)} drawn per item, "
        f"batch {args.batch}")

  # CPU cost per item, split into stages (single thread), with the malloc settings the
  # pipeline's transforms use.
  heap.keep_freed_memory()
  spec = mixing.MixSpec.from_config(cfg)
  rng = np.random.default_rng(0)
  # Warm-up items first (file cache, the kept heap), as the pipeline runs below have them.
  for i in range(8):
    mixing.mix(index.tracks, i % len(index.tracks), rng, spec)
  n = 96
  mark = Load.mark()
  t = time.process_time()
  clean = [mixing.mix(index.tracks, i % len(index.tracks), rng, spec)[0] for i in range(n)]
  t_mix = (time.process_time() - t) / n
  mix_load = Load.since(mark)
  for quality in sorted({cfg.mp3_quality, 7}):
    mark = Load.mark()
    t = time.process_time()
    for i, x in enumerate(clean):
      x = x / max(np.abs(x).max(), 1e-9) * mixing.PRE_CODEC_PEAK
      codecs.degrade(x, cfg.sample_rate, "mp3", cfg.bitrates[i % len(cfg.bitrates)], quality)
    t_mp3 = (time.process_time() - t) / n
    print(f"CPU per item: read+mix {t_mix * 1e3:.1f} ms, mp3 (LAME -q {quality}) encode+decode "
          f"{t_mp3 * 1e3:.1f} ms -> {seg / (t_mix + t_mp3):.1f} s of audio per CPU-second "
          f"(read+mix: {mix_load}; mp3: {Load.since(mark)})")

  cfg.num_workers, read_threads = 0, cfg.read_threads
  for threads in (1, args.workers) if args.workers > 1 else (1,):
    # LAME, libsndfile, FFmpeg and NumPy release the GIL, so read threads scale too.
    cfg.read_threads = threads
    mark = Load.mark()
    wall, cpu, items = run(cfg, args.batch, args.batches, index)
    print(f"in-process (0 workers, {threads} read thread{'s' if threads > 1 else ''}): "
          f"{items * seg / wall:.1f} s audio/s wall, {items * seg / cpu:.1f} s audio per "
          f"CPU-second ({Load.since(mark)})")
  cfg.read_threads = read_threads  # the config's own for the worker processes

  if args.workers > 0:
    cfg.num_workers = args.workers
    monitor = PeakMemory()
    base_pss, base_rss = _memory(os.getpid())
    monitor.start()
    mark = Load.mark()
    wall, _, items = run(cfg, args.batch, args.batches, index)
    load = Load.since(mark)
    monitor.done.set()
    monitor.join()
    rate = items * seg / wall
    print(f"{args.workers} workers: {rate:.1f} s audio/s wall, {rate / args.workers:.1f} per "
          f"worker; peak memory {monitor.peak_pss / 2**20:.0f} MiB PSS "
          f"({monitor.peak_rss / 2**20:.0f} MiB RSS) for main process + workers, of which "
          f"the main process before starting was {base_pss / 2**20:.0f} MiB PSS ({load})")


if __name__ == "__main__":
  main()
