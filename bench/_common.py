"""What the benchmarks share: the machine's load beside their numbers, the published side."""

from __future__ import annotations

import json
import os
import subprocess

from apollo_jax.data import heap


def cpu_pressure_us() -> int | None:
  """Machine-wide 'some' CPU stall time in microseconds (PSI), or None.

  Its growth over a timed span divided by the span is the fraction of time some task waited
  for a CPU: above ~0.05 other work was competing and the times are not clean.
  """
  try:
    with open("/proc/pressure/cpu") as f:
      return int(f.readline().split("total=")[1])
  except (OSError, ValueError, IndexError):
    return None


def cpu_steal_s(stat: str | None = None) -> float | None:
  """CPU time the hypervisor ran other guests instead of this machine's CPUs, in seconds
  (``steal`` of /proc/stat's ``cpu`` line, summed over CPUs), or None where not reported.

  PSI (:func:`cpu_pressure_us`) does not see it: on a shared host a quiet guest's step was
  18-20 s with up to 1.4 s of steal per step and 15-16 s with ~0.1 s, at the same pressure
  (0.01).
  ``stat``: the text of /proc/stat (read when None).
  """
  try:
    if stat is None:
      with open("/proc/stat") as f:
        stat = f.readline()
    fields = stat.split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if fields[0] == "cpu" else None
  except (OSError, ValueError, IndexError):
    return None


def run_published(cmd: list[str], jemalloc: str | None):
  """Runs a timing of the published code (``cmd``, in the torch venv) in a subprocess and
  returns the JSON of its last output line, or None with its error printed.

  The child gets the C library's malloc as before our huge-page restart; with ``jemalloc``
  (a libjemalloc.so path) it runs on jemalloc with page return off: the "tuned" reference.
  """
  env = heap.env_before_restart(os.environ)
  if jemalloc:
    env.update(LD_PRELOAD=jemalloc, MALLOC_CONF="dirty_decay_ms:-1,muzzy_decay_ms:-1")
  out = subprocess.run(cmd, capture_output=True, text=True, env=env)
  if out.returncode != 0:
    print(f"torch reference failed:\n{out.stderr[-2000:]}")
    return None
  return json.loads(out.stdout.strip().splitlines()[-1])
