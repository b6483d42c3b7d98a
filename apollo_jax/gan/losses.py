"""GAN losses of the published Apollo training (paper II-E), as pure functions.

* Reconstruction: multi-resolution STFT magnitude loss, the mean over windows of
  ``mean(| |S_w(est)| - |S_w(target)| |) / (mean |S_w(target)| + eps)``,
  eps = float32 machine epsilon, on the raw waveforms (channels folded into the batch).
* Optional log-magnitude term (not in the published recipe; ``TrainConfig.log_mag_weight``):
  the mean over windows of ``mean | log10 max(|S_w(est)|, floor) - log10 max(|S_w(target)|,
  floor) |``. The linear loss above barely charges for energy in bins where the target is
  near silent (a wrong high band on a source that has none); this term charges by the ratio.
* Least-squares adversarial losses for D and G.
* Feature matching: mean over windows i and layers j of
  ``mean |H_ij(fake) - sg(H_ij(real))| / (mean |sg(H_ij(real))| + 1e-8)``.

Each window's STFT is computed once (:func:`apollo_jax.spectral.multi_stft`) and can be
shared with the discriminator, which only rescales it.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from apollo_jax.gan.discriminator import WINDOWS, Features, Scores, Spectra
from apollo_jax.spectral import multi_stft

REC_EPS = float(np.finfo(np.float32).eps)
# Below 16-bit quantisation noise in any of the STFT windows used here: bins quieter than
# this count as silent in the log-magnitude term.
LOG_MAG_FLOOR = 1e-5
FM_EPS = 1e-8


def _mean_over_windows(distance, est_spectra: Spectra, target_spectra: Spectra) -> jnp.ndarray:
  """Mean over windows of ``distance(est, target)`` (one spectrum of each per window)."""
  if len(est_spectra) != len(target_spectra):
    raise ValueError(f"{len(est_spectra)} estimate spectra vs {len(target_spectra)} target spectra")
  total = 0.0
  for est, target in zip(est_spectra, target_spectra):
    total = total + distance(est, target)
  return total / len(est_spectra)


def stft_magnitude_loss(est_spectra: Spectra, target_spectra: Spectra) -> jnp.ndarray:
  """Multi-resolution magnitude loss from precomputed spectra (one per window)."""
  def distance(est, target):
    target_mag = jnp.abs(target)
    return jnp.mean(jnp.abs(jnp.abs(est) - target_mag)) / (jnp.mean(target_mag) + REC_EPS)
  return _mean_over_windows(distance, est_spectra, target_spectra)


def log_magnitude_loss(est_spectra: Spectra, target_spectra: Spectra,
                       floor: float = LOG_MAG_FLOOR) -> jnp.ndarray:
  """Mean over windows of the mean absolute difference of ``log10 max(|S|, floor)``."""
  def distance(est, target):
    return jnp.mean(jnp.abs(jnp.log10(jnp.maximum(jnp.abs(est), floor))
                            - jnp.log10(jnp.maximum(jnp.abs(target), floor))))
  return _mean_over_windows(distance, est_spectra, target_spectra)


def multi_resolution_stft_loss(est: jnp.ndarray, target: jnp.ndarray,
                               windows: Sequence[int] = WINDOWS) -> jnp.ndarray:
  """Reconstruction loss of waveforms ``est``, ``target``: (batch, channels, samples)."""
  if est.shape != target.shape:
    raise ValueError(f"estimate shape {est.shape} != target shape {target.shape}")
  return stft_magnitude_loss(multi_stft(est, windows), multi_stft(target, windows))


def lsgan_d_loss(real_scores: Scores, fake_scores: Scores) -> jnp.ndarray:
  """``sum_i mean((D_i(real) - 1)^2) / n + mean(D_i(fake)^2) / n``."""
  n = len(real_scores)
  return sum(jnp.mean(jnp.square(r - 1.0)) / n + jnp.mean(jnp.square(f)) / n
             for r, f in zip(real_scores, fake_scores))


def lsgan_g_loss(fake_scores: Scores) -> jnp.ndarray:
  """``sum_i mean((D_i(fake) - 1)^2) / n``."""
  n = len(fake_scores)
  return sum(jnp.mean(jnp.square(f - 1.0)) / n for f in fake_scores)


def feature_matching_loss(fake_features: Features, real_features: Features) -> jnp.ndarray:
  """Relative L1 between hidden maps; the real maps are constants (stop_gradient)."""
  total, count = 0.0, 0
  for fake_maps, real_maps in zip(fake_features, real_features):
    for fake, real in zip(fake_maps, real_maps):
      real = jax.lax.stop_gradient(real)
      total = total + jnp.mean(jnp.abs(fake - real)) / (jnp.mean(jnp.abs(real)) + FM_EPS)
      count += 1
  return total / count
