"""Flags shared by the command lines."""

from __future__ import annotations

import argparse


def add_checkpoint_rate_flags(p: argparse.ArgumentParser) -> None:
  """``--sample-rate`` / ``--win-ms`` for :func:`load_generator` (state dicts lacking them)."""
  p.add_argument("--sample-rate", type=int, default=None,
                 help="sample rate of a checkpoint that does not record it (default: inferred "
                      "from its FFT size with the published 20 ms window)")
  p.add_argument("--win-ms", type=float, default=None,
                 help="STFT window in ms of a checkpoint that does not record it (default 20)")
