"""Reads fuzzed files in a memory-limited process, one JSON line per file (for test_fuzz_audio).

  python tests/fuzz_worker.py audio|zip LIST_FILE OUT_FILE MEMORY_LIMIT_GB SECONDS_PER_FILE

Before each file a ``{"start": path}`` line is written and flushed, so when the process
dies (a segfault, the kernel's OOM killer) the parent knows which file did it. After it, a
line with the outcome: ``ok``, ``refused`` (one of the project's own errors), ``hang``
(over the time limit) or ``crash`` (anything else), and the peak RSS so far.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
import traceback

import numpy as np


class Hang(Exception):
  """A file took longer than its time limit."""


def _on_alarm(signum, frame):
  del signum, frame
  raise Hang


def read_audio(path: str) -> None:
  """What audio.load, audio.Reader and the restore command's reading do with one file."""
  from apollo_jax import audio
  from apollo_jax.cli import restore
  audio.load(path)                       # native rate
  audio.load(path, 44100, start=7, frames=5000)
  (src, _), = restore.collect_inputs([path])
  with audio.Reader(src, 44100) as reader:  # as restore_file reads it, at the model's rate
    _ = reader.frames
    for block in reader.blocks():
      assert block.dtype == np.float32 and block.shape[0] == reader.channels
      assert np.isfinite(block).all()
      assert block.size <= audio.MAX_BLOCK_SAMPLES


def read_zip(path: str) -> None:
  from apollo_jax.checkpoints.published import load_torch_generator
  load_torch_generator(path)


def main(kind: str, list_file: str, out_file: str, memory_gb: float, seconds: int) -> None:
  limit = int(memory_gb * (1 << 30))
  resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  if kind == "audio":
    from apollo_jax.audio import AudioError
    read, allowed = read_audio, (AudioError,)
  else:
    from apollo_jax.checkpoints import CheckpointFormatError, UnsafeCheckpointError
    read, allowed = read_zip, (CheckpointFormatError, UnsafeCheckpointError)
  signal.signal(signal.SIGALRM, _on_alarm)
  with open(list_file) as f:
    paths = [line.rstrip("\n") for line in f if line.strip()]
  with open(out_file, "w") as out:
    for path in paths:
      out.write(json.dumps({"start": path}) + "\n")
      out.flush()
      row = {"path": path, "outcome": "ok", "message": ""}
      signal.alarm(seconds)
      try:
        read(path)
      except allowed as e:
        row.update(outcome="refused", message=str(e)[:300])
      except Hang:
        row.update(outcome="hang", message=f"over {seconds} s")
      except BaseException as e:  # anything else is what the test looks for
        row.update(outcome="crash", message=f"{type(e).__name__}: {str(e)[:300]} | "
                   + " / ".join(traceback.format_exc().strip().splitlines()[-5:]))
      finally:
        signal.alarm(0)
      row["rss_mb"] = peak_rss_mb()
      out.write(json.dumps(row) + "\n")
      out.flush()


def peak_rss_mb() -> float:
  """This process's own peak RSS (VmHWM). Not getrusage's ru_maxrss: Linux carries that
  across execve, so a child started by a large parent (a pytest worker that has compiled
  JAX programs) would report the parent's RSS instead of its own."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
