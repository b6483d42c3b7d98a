"""What the benchmarks print beside their numbers about the machine's load."""

from __future__ import annotations


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
