"""SIGTERM handled like Ctrl-C by the command-line tools."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


@contextlib.contextmanager
def interrupts_as_keyboard_interrupt() -> Iterator[None]:
  """Within the block, SIGTERM raises KeyboardInterrupt, as SIGINT does.

  So ``kill`` and Ctrl-C take the same clean-up path (``except BaseException`` / ``with``
  blocks that remove temporary files and created folders). Outside the main thread
  (signals cannot be set there) it does nothing.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def handle(signum, frame):
    del signum, frame
    raise KeyboardInterrupt

  previous = signal.signal(signal.SIGTERM, handle)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)
