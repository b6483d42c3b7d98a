"""Keeps freed memory in the process instead of handing it back to the kernel at once.

Making one training item allocates and frees tens of megabytes of arrays (~1 MB each for
3 s of stereo). glibc's default gives the top of the heap back to the kernel whenever more
than about twice the last freed block is free there, so the next item takes the same memory
back one 4 KiB page fault at a time: measured on the demo corpus, ~2,500 page faults per
item and half of the CPU time of reading and mixing was this kernel time.
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
