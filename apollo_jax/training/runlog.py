"""Run logs: tensorboardX event files and a plain ``metrics.jsonl`` for scripts.

Only process 0 of a multi-host run writes; other processes get a logger that does nothing.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np


class RunLogger:
  """Writes scalars, audio, images and text under ``workdir``.

  ``metrics.jsonl`` holds one JSON object per logged step (``{"step": ..., name: value}``);
  on resume, rows newer than the restored step are dropped so the file reads as one run.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter
      os.makedirs(workdir, exist_ok=True)
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def truncate_after(self, step: int) -> None:
    """Drops ``metrics.jsonl`` rows of steps after ``step`` (they will be redone)."""
    if not self.enabled or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      rows = [line for line in f if line.strip() and _row_step(line) <= step]
    with open(self.path + ".tmp", "w") as f:
      f.writelines(rows)
    os.replace(self.path + ".tmp", self.path)

  def scalars(self, step: int, values: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step)}
    for name, value in values.items():
      value = float(np.asarray(value))
      row[name] = value
      self._tb.add_scalar(name, value, step)
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def audio(self, step: int, tag: str, wav: np.ndarray, sample_rate: int) -> None:
    """``wav``: (channels, samples); logged as (samples, channels)."""
    if self.enabled:
      self._tb.add_audio(tag, np.clip(np.asarray(wav, np.float32).T, -1, 1), step,
                         sample_rate=sample_rate)

  def figure(self, step: int, tag: str, fig) -> None:
    if self.enabled:
      self._tb.add_figure(tag, fig, step, close=True)

  def text(self, tag: str, text: str) -> None:
    if self.enabled:
      self._tb.add_text(tag, text, 0)

  def close(self) -> None:
    if self.enabled:
      self._tb.close()


def _row_step(line: str) -> int:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError):
    return -1
