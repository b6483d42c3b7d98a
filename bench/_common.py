"""What the benchmarks share: the machine's load beside their numbers, the published side."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time

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


@dataclasses.dataclass(frozen=True)
class Load:
  """The machine's CPU load over timed spans: seconds some task waited for a CPU (PSI),
  CPU-seconds run for other guests (steal), wall seconds. None: not reported here.

  ``mark = Load.mark()`` before a span, ``Load.since(mark)`` after it; spans add up (``+``).
  """
  waited_s: float | None
  stolen_s: float | None
  wall_s: float

  @staticmethod
  def mark() -> tuple[int | None, float | None, float]:
    return cpu_pressure_us(), cpu_steal_s(), time.perf_counter()

  @classmethod
  def since(cls, mark: tuple[int | None, float | None, float]) -> "Load":
    psi0, steal0, wall0 = mark
    psi1, steal1, wall1 = cls.mark()
    return cls(None if psi0 is None or psi1 is None else (psi1 - psi0) / 1e6,
               None if steal0 is None or steal1 is None else steal1 - steal0, wall1 - wall0)

  def __add__(self, other: "Load") -> "Load":
    def add(a, b):
      return None if a is None or b is None else a + b
    return Load(add(self.waited_s, other.waited_s), add(self.stolen_s, other.stolen_s),
                self.wall_s + other.wall_s)

  def pressure(self) -> str:
    """Fraction of the wall time some task waited for a CPU (above ~0.05: not clean)."""
    return "n/a" if self.waited_s is None else f"{self.waited_s / self.wall_s:.3f}"

  def steal(self) -> str:
    """CPU-seconds per wall second the hypervisor ran other guests (above ~0.02: not clean)."""
    return "n/a" if self.stolen_s is None else f"{self.stolen_s / self.wall_s:.3f}"

  def __str__(self) -> str:
    return f"cpu pressure {self.pressure()}, steal {self.steal()}"


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
