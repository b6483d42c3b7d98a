"""Null test: how far one restoration is from another (ours against the published code's).

Subtract the two signals and measure what is left: the residual's level, the SNR of the
reference against it, and the largest sample difference. A faithful port leaves a residual
at the float32 noise floor (about -140 dBFS for music).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from apollo_jax import audio


@dataclasses.dataclass(frozen=True)
class NullTest:
  """Residual statistics of ``ours - ref``.

  Attributes:
    residual_db: RMS level of the residual in dBFS (-inf when identical).
    snr_db: ``10 log10(sum ref^2 / sum residual^2)`` (inf when identical).
    max_abs: largest absolute sample difference.
    samples: samples per channel compared.
    channels: channels compared.
  """
  residual_db: float
  snr_db: float
  max_abs: float
  samples: int
  channels: int

  def line(self) -> str:
    return (f"residual {self.residual_db:.1f} dBFS, SNR {self.snr_db:.1f} dB, max abs difference "
            f"{self.max_abs:.3g} over {self.samples} samples x {self.channels} channels")


def _db(power: float) -> float:
  return 10 * math.log10(power) if power > 0 else -math.inf


def compare_arrays(ref: np.ndarray, ours: np.ndarray) -> NullTest:
  """Null test of two arrays of the same shape (..., samples), e.g. (channels, samples).

  Raises ValueError when the shapes differ.
  """
  ref = np.asarray(ref, np.float64)
  ours = np.asarray(ours, np.float64)
  if ref.shape != ours.shape:
    raise ValueError(f"shapes differ: reference {ref.shape}, ours {ours.shape}")
  res = ours - ref
  res_power = float(np.mean(res ** 2))
  ref_power = float(np.mean(ref ** 2))
  snr = math.inf if res_power == 0 else _db(ref_power) - _db(res_power)
  return NullTest(_db(res_power), snr, float(np.max(np.abs(res))) if res.size else 0.0,
                  int(ref.shape[-1]), int(np.prod(ref.shape[:-1], dtype=int)))


def compare_files(ref_path: str, ours_path: str) -> NullTest:
  """Null test of two audio files (same sample rate and channel count, no resampling).

  Raises:
    AudioError: a file cannot be read.
    ValueError: the sample rates, channel counts or lengths differ.
  """
  ref, ref_rate = audio.load(ref_path)
  ours, our_rate = audio.load(ours_path)
  if ref_rate != our_rate:
    raise ValueError(f"sample rates differ: {ref_path} {ref_rate} Hz, {ours_path} {our_rate} Hz")
  if ref.shape[0] != ours.shape[0]:
    raise ValueError(f"channel counts differ: {ref_path} {ref.shape[0]}, {ours_path} {ours.shape[0]}")
  if ref.shape[1] != ours.shape[1]:
    raise ValueError(f"lengths differ: {ref_path} {ref.shape[1]} samples, {ours_path} "
                     f"{ours.shape[1]} samples (a null test needs aligned files)")
  return compare_arrays(ref, ours)
