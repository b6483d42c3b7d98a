"""When glibc's malloc gives freed memory back to the kernel: later, or at once.

``keep_freed_memory`` (the processes that make training items): making one item allocates
and frees tens of megabytes of arrays (~1 MB each for 3 s of stereo). glibc's default gives
the top of the heap back to the kernel whenever more than about twice the last freed block
is free there, so the next item takes the same memory back one 4 KiB page fault at a time:
measured on the demo corpus, ~2,500 page faults per item and half of the CPU time of reading
and mixing was this kernel time.

``release_freed_memory`` (the training process, once the step is compiled): XLA's compiler
allocates and frees over a gigabyte, which glibc keeps in its arenas, so the compiled
step's own buffers came on top of it. Measured with bench/train_step.py (64/2, 3 s): RSS
2.08 GB after compiling, 0.88 GB after releasing; the whole run's peak 3.65 -> 2.44 GB.

``restart_with_huge_pages`` (train.py, eval.py, the benchmarks, before anything else): XLA:CPU
allocates a compiled program's temporaries (gigabytes at paper size) afresh on every call,
and glibc serves such blocks with new mappings, so every training step page-faulted its
whole working set again, 4 KiB at a time: measured ~160,000 faults and 0.4-0.7 s of kernel
time per call of one paper-width block's gradient. glibc's ``glibc.malloc.hugetlb=1`` tunable backs
those mappings with transparent huge pages (2 MiB), which it can only read at start-up,
hence the restart. Measured with bench/train_step.py (64/2, 3 s): 4.86 -> 4.30 s per step.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Blocks below this come from the heap (glibc's own ceiling for its adaptive threshold).
MMAP_THRESHOLD = 32 << 20
# Free memory kept at the top of the heap before it is returned (per process).
TRIM_THRESHOLD = 64 << 20
_done = False
# glibc >= 2.35: malloc asks for transparent huge pages on the memory it maps.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"
# Set on the restart to the GLIBC_TUNABLES before it: never restart twice.
_RESTARTED = "APOLLO_JAX_TUNABLES_BEFORE_RESTART"


def keep_freed_memory() -> bool:
  """Sets glibc's malloc thresholds once per process; True if they were set.

  A no-op (False) where the C library is not glibc. Only the speed changes, never a value.
  """
  global _done
  if not _done:
    _done = True
    try:
      mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
      return False
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    return mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
  return True


def release_freed_memory() -> bool:
  """Gives the kernel back the free memory glibc holds (``malloc_trim(0)``); True if any was.

  A no-op (False) where the C library is not glibc. Only the memory changes, never a value.
  """
  try:
    return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
  except (OSError, AttributeError):
    return False


def huge_pages_env(environ) -> dict | None:
  """``environ`` with glibc's huge-page malloc tunable added, or None to leave it alone.

  None where it cannot help (not Linux, not glibc >= 2.35, transparent huge pages off), where
  ``GLIBC_TUNABLES`` already names the tunable (the user's choice, either way: set
  ``GLIBC_TUNABLES=glibc.malloc.hugetlb=0`` to opt out), or after a restart. Other
  tunables are kept.
  """
  tunables = environ.get("GLIBC_TUNABLES", "")
  if not sys.platform.startswith("linux") or HUGE_PAGES_TUNABLE in tunables or _RESTARTED in environ:
    return None
  try:
    lib, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    if lib != "glibc" or tuple(int(v) for v in version.split(".")[:2]) < (2, 35):
      return None
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
      if "[never]" in f.read():
        return None
  except (OSError, ValueError, AttributeError):
    return None
  return {**environ, "GLIBC_TUNABLES": ":".join(filter(None, (tunables, f"{HUGE_PAGES_TUNABLE}=1"))),
          _RESTARTED: tunables}


def env_before_restart(environ) -> dict:
  """``environ`` as it was before :func:`restart_with_huge_pages` (for other programs run
  from a restarted one, e.g. a reference benchmark that must run with its own malloc)."""
  env = dict(environ)
  if _RESTARTED in env:
    env["GLIBC_TUNABLES"] = env.pop(_RESTARTED)
    if not env["GLIBC_TUNABLES"]:
      del env["GLIBC_TUNABLES"]
  return env


def restart_with_huge_pages() -> None:
  """Restarts this process (same pid, interpreter and arguments) with :func:`huge_pages_env`.

  Call it first thing in a script's ``__main__`` block, never from library code: the
  process is replaced. Returns without doing anything where :func:`huge_pages_env` says so.
  Only the speed changes, never a value.
  """
  env = huge_pages_env(os.environ)
  if env is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)
