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
"""

from __future__ import annotations

import ctypes

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Blocks below this come from the heap (glibc's own ceiling for its adaptive threshold).
MMAP_THRESHOLD = 32 << 20
# Free memory kept at the top of the heap before it is returned (per process).
TRIM_THRESHOLD = 64 << 20
_done = False


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
