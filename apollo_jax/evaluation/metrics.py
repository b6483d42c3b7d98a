"""Objective quality metrics of a restoration against the clean reference (paper III-C).

All functions take numpy float arrays ``reference`` and ``estimate`` of the same shape
``(channels, samples)`` (SDR, SI-SNR/SI-SDR and LSD also accept leading batch axes,
``(..., channels, samples)``) and return one number per example: the mean over channels.

- :func:`sdr`: BSSEval SDR exactly as the published Apollo evaluation computes it
  (``fast_bss_eval.sdr(ref, est, zero_mean=True)``: 512-tap distortion filter, channels as
  sources). It equals ``mir_eval.separation.bss_eval_sources`` on zero-mean signals.
- :func:`si_sdr` / :func:`si_snr`: scale-invariant SDR; SI-SNR is SI-SDR of zero-mean signals.
- :func:`visqol`: ViSQOL v3 audio mode (MOS-LQO, 1..5) on the channel mix at 48 kHz.
- :func:`lsd`: log-spectral distance.
"""

from __future__ import annotations

import functools
import logging

import jax
import numpy as np
from threadpoolctl import threadpool_limits

from apollo_jax import audio, spectral

EPS = float(np.finfo(np.float32).eps)
VISQOL_RATE = 48000
SDR_FILTER_TAPS = 512
METRICS = ("sdr", "si_snr", "visqol", "lsd")
# Higher is better for every metric but LSD (a distance).
HIGHER_IS_BETTER = {"sdr": True, "si_snr": True, "si_sdr": True, "visqol": True, "lsd": False}


def _check_pair(reference: np.ndarray, estimate: np.ndarray, min_ndim: int = 2):
  reference = np.asarray(reference, np.float64)
  estimate = np.asarray(estimate, np.float64)
  if reference.shape != estimate.shape:
    raise ValueError(f"reference {reference.shape} and estimate {estimate.shape} must have the same shape")
  if reference.ndim < min_ndim:
    raise ValueError(f"expected (..., channels, samples) arrays, got shape {reference.shape}")
  return reference, estimate


def sdr(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray | float:
  """BSSEval signal-to-distortion ratio in dB, as the paper reports it.

  Both signals are made zero-mean; each estimated channel may match the reference through a
  512-tap FIR filter (what BSSEval v3 calls the allowed distortion), channels are treated as
  sources and paired by the best permutation. Can exceed plain SNR by a few dB.

  Args:
    reference, estimate: ``(..., channels, samples)``.

  Returns:
    ``(...)`` mean SDR over channels (a float for 2-D input); ``+inf`` for a perfect
    estimate. Channels whose reference is silent are left out (BSSEval is undefined there);
    ``nan`` if every reference channel is silent or the estimate is silent.
  """
  import fast_bss_eval.numpy as fbe  # The numpy backend: no torch needed.
  reference, estimate = _check_pair(reference, estimate)
  lead = reference.shape[:-2]
  refs = reference.reshape(-1, *reference.shape[-2:])
  ests = estimate.reshape(-1, *estimate.shape[-2:])
  out = np.full(len(refs), np.nan)
  for i, (r, e) in enumerate(zip(refs, ests)):
    keep = np.ptp(r, axis=-1) > 0
    if not keep.any() or not np.ptp(e, axis=-1).any():
      continue
    # 512x512 solves: BLAS threads only add contention (20x slower on a busy 2-core box).
    with np.errstate(divide="ignore", invalid="ignore"), threadpool_limits(1):
      try:
        out[i] = np.mean(fbe.sdr(r[keep], e[keep], filter_length=SDR_FILTER_TAPS, zero_mean=True))
      except (np.linalg.LinAlgError, ValueError):
        pass  # Degenerate (e.g. one silent estimate channel): leave nan.
  return float(out[0]) if not lead else out.reshape(lead)


def si_sdr(reference: np.ndarray, estimate: np.ndarray, zero_mean: bool = False) -> np.ndarray | float:
  """Scale-invariant SDR in dB (Le Roux et al. 2019), mean over channels.

  Per channel: ``alpha = (<e, r> + eps) / (|r|^2 + eps)``, ``t = alpha r``,
  ``SI-SDR = 10 log10((|t|^2 + eps) / (|e - t|^2 + eps))`` with ``eps`` the float32 machine
  epsilon (the torchmetrics convention, so identical signals give a large finite value).
  Invariant to any non-zero gain on the estimate.

  Args:
    reference, estimate: ``(..., channels, samples)``.
    zero_mean: subtract each channel's mean first (this makes it SI-SNR).

  Returns:
    ``(...)`` (a float for 2-D input).
  """
  reference, estimate = _check_pair(reference, estimate)
  if zero_mean:
    reference = reference - reference.mean(-1, keepdims=True)
    estimate = estimate - estimate.mean(-1, keepdims=True)
  alpha = ((estimate * reference).sum(-1, keepdims=True) + EPS) / (
      (reference ** 2).sum(-1, keepdims=True) + EPS)
  target = alpha * reference
  ratio = ((target ** 2).sum(-1) + EPS) / (((estimate - target) ** 2).sum(-1) + EPS)
  out = np.mean(10.0 * np.log10(ratio), axis=-1)
  return float(out) if out.ndim == 0 else out


def si_snr(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray | float:
  """Scale-invariant SNR in dB: :func:`si_sdr` of zero-mean signals (the paper's SI-SNR)."""
  return si_sdr(reference, estimate, zero_mean=True)


# One compiled program per input shape (eager mode would compile each op separately).
_jit_stft = jax.jit(spectral.stft, static_argnums=(1, 2))


def power_spectrogram(x: np.ndarray, n_fft: int = 2048, hop: int = 512) -> np.ndarray:
  """``|spectral.stft(x)|^2`` as float64 numpy: ``(..., samples) -> (..., n_fft//2+1, frames)``."""
  spec = np.asarray(_jit_stft(np.asarray(x, np.float32), n_fft, hop))
  return np.abs(spec).astype(np.float64) ** 2


def lsd(reference: np.ndarray, estimate: np.ndarray, n_fft: int = 2048, hop: int = 512,
        eps: float = 1e-10) -> np.ndarray | float:
  """Log-spectral distance (lower is better, 0 for identical signals).

  With ``P = |STFT|^2`` (``spectral.stft``: periodic Hann window ``n_fft``, hop ``hop``,
  centred reflect padding) of reference ``r`` and estimate ``e``, per channel:

      LSD = mean_frames sqrt( mean_bins ( log10((P_r + eps) / (P_e + eps)) )^2 )

  i.e. the RMS difference of the log10 power spectra per frame, averaged over frames (the
  definition of Kuleshov et al. 2017 and later bandwidth-extension papers; multiply by 10
  for dB). A gain ``g`` on the estimate gives exactly ``|log10(g^2)|``.

  Args:
    reference, estimate: ``(..., channels, samples)`` with ``samples > n_fft // 2``.

  Returns:
    ``(...)`` mean over channels (a float for 2-D input).
  """
  reference, estimate = _check_pair(reference, estimate)
  diff = np.log10((power_spectrogram(reference, n_fft, hop) + eps) /
                  (power_spectrogram(estimate, n_fft, hop) + eps))  # (..., bins, frames)
  per_frame = np.sqrt(np.mean(diff ** 2, axis=-2))
  out = np.mean(per_frame, axis=(-2, -1))
  return float(out) if out.ndim == 0 else out


@functools.lru_cache(maxsize=1)
def _visqol_api():
  """One ViSQOL instance per process (loading the SVR model is not free)."""
  from visqol import VisqolApi
  # visqol logs a warning per call about things we already handle (e.g. resampling).
  logging.getLogger("visqol").setLevel(logging.ERROR)
  api = VisqolApi()
  api.create(mode="audio")
  return api


def visqol(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
  """ViSQOL v3 audio-mode MOS-LQO (about 1 to 4.75; identical signals give about 4.73).

  The channels are averaged to mono (as ViSQOL's own reader does) and resampled to 48 kHz,
  the rate its audio mode is calibrated for (at 44.1 kHz scores come out inflated). The first
  call in a process compiles the numba kernels (about 14 s; cached on disk afterwards).

  Args:
    reference, estimate: ``(channels, samples)`` at ``sample_rate``.
  """
  reference, estimate = _check_pair(reference, estimate)
  if reference.ndim != 2:
    raise ValueError(f"visqol takes one (channels, samples) pair, got shape {reference.shape}")
  mono = lambda x: audio.resample(x.mean(0, keepdims=True).astype(np.float32), sample_rate, VISQOL_RATE)[0]
  result = _visqol_api().measure_from_arrays(mono(reference).astype(np.float64),
                                             mono(estimate).astype(np.float64), VISQOL_RATE)
  return float(result.moslqo)


def score(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
          metrics: tuple[str, ...] = METRICS) -> dict[str, float]:
  """Every requested metric of one ``(channels, samples)`` pair: ``{name: value}``.

  Names: ``sdr``, ``si_snr``, ``si_sdr``, ``visqol``, ``lsd``.
  """
  fns = {"sdr": sdr, "si_snr": si_snr, "si_sdr": si_sdr, "lsd": lsd,
         "visqol": functools.partial(visqol, sample_rate=sample_rate)}
  unknown = [m for m in metrics if m not in fns]
  if unknown:
    raise ValueError(f"unknown metrics {unknown}; choose from {sorted(fns)}")
  return {m: float(fns[m](reference, estimate)) for m in metrics}
