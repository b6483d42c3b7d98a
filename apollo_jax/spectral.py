"""Short-time Fourier transforms with the conventions of the published Apollo code.

Both the generator (window 882) and the discriminator / reconstruction loss (windows
32 ... 2048) use the same transform: periodic Hann window, frames centred with reflect
padding of ``n_fft // 2`` on both sides, no normalisation, one-sided spectrum. This is
what ``torch.stft(..., center=True, pad_mode="reflect")`` computes.

Framing and overlap-add are written with reshapes and static slices instead of gathers
and scatters whenever the hop divides the window (always the case here), so both the
forward pass and its gradient stay cheap on CPU.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=None)
def hann_window(n_fft: int) -> np.ndarray:
  """Periodic Hann window ``0.5 - 0.5 cos(2 pi n / N)``, n = 0..N-1, float32."""
  n = np.arange(n_fft, dtype=np.float64)
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)).astype(np.float32)


def num_frames(num_samples: int, hop: int) -> int:
  """Frames of a centred STFT: ``1 + samples // hop``."""
  return 1 + num_samples // hop


def _frame(x: jnp.ndarray, n_fft: int, hop: int, frames: int) -> jnp.ndarray:
  """(..., length) -> (..., frames, n_fft), frame t starting at sample t * hop."""
  if n_fft % hop == 0:
    k = n_fft // hop
    blocks_needed = frames + k - 1
    need = blocks_needed * hop
    x = x[..., :need] if x.shape[-1] >= need else jnp.pad(
        x, [(0, 0)] * (x.ndim - 1) + [(0, need - x.shape[-1])])
    blocks = x.reshape(*x.shape[:-1], blocks_needed, hop)
    return jnp.concatenate([blocks[..., i:i + frames, :] for i in range(k)], axis=-1)
  idx = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]
  return x[..., idx]


def stft(x: jnp.ndarray, n_fft: int, hop: int | None = None) -> jnp.ndarray:
  """Centred, one-sided STFT.

  Args:
    x: (..., samples) real waveform; needs ``samples > n_fft // 2`` for reflect padding.
    n_fft: window and FFT length.
    hop: hop size, default ``n_fft // 2``.

  Returns:
    (..., n_fft // 2 + 1, frames) complex64 spectrum, ``frames = 1 + samples // hop``.
  """
  hop = hop or n_fft // 2
  samples = x.shape[-1]
  pad = n_fft // 2
  if samples <= pad:
    raise ValueError(
        f"STFT with window {n_fft} needs more than {pad} samples for reflect padding, "
        f"got {samples}")
  x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
  return analysis_frames(_frame(x, n_fft, hop, num_frames(samples, hop)))


def analysis_frames(frames: jnp.ndarray) -> jnp.ndarray:
  """Windowed rFFT of ready-cut frames: (..., frames, n_fft) -> (..., n_fft // 2 + 1, frames)."""
  n_fft = frames.shape[-1]
  spec = jnp.fft.rfft(frames * hann_window(n_fft), n=n_fft, axis=-1)
  return jnp.swapaxes(spec, -1, -2)


def synthesis_frames(spec: jnp.ndarray, n_fft: int) -> jnp.ndarray:
  """Windowed inverse rFFT: (..., n_fft // 2 + 1, frames) -> (..., frames, n_fft), to overlap-add."""
  return jnp.fft.irfft(jnp.swapaxes(spec, -1, -2), n=n_fft, axis=-1) * hann_window(n_fft)


@functools.lru_cache(maxsize=None)
def window_envelope(n_fft: int, hop: int, frames: int) -> np.ndarray:
  """Overlap-added squared window, (n_fft + hop * (frames - 1),) float32."""
  w2 = hann_window(n_fft).astype(np.float64) ** 2
  env = np.zeros(n_fft + hop * (frames - 1))
  for t in range(frames):
    env[t * hop:t * hop + n_fft] += w2
  return env.astype(np.float32)


def _overlap_add(frames: jnp.ndarray, hop: int) -> jnp.ndarray:
  """(..., frames, n_fft) -> (..., n_fft + hop * (frames - 1)), frame t placed at t * hop."""
  t, n_fft = frames.shape[-2:]
  lead = frames.shape[:-2]
  if n_fft % hop == 0:
    k = n_fft // hop
    parts = frames.reshape(*lead, t, k, hop)
    out = None
    for i in range(k):
      # Chunk i of frame t lands in output block t + i.
      shifted = jnp.pad(parts[..., i, :], [(0, 0)] * len(lead) + [(i, k - 1 - i), (0, 0)])
      out = shifted if out is None else out + shifted
    return out.reshape(*lead, (t + k - 1) * hop)
  length = n_fft + hop * (t - 1)
  idx = np.arange(t)[:, None] * hop + np.arange(n_fft)[None, :]
  out = jnp.zeros((*lead, length), frames.dtype)
  return out.at[..., idx].add(frames)


def istft(spec: jnp.ndarray, n_fft: int, length: int, hop: int | None = None) -> jnp.ndarray:
  """Inverse of :func:`stft` (``torch.istft(center=True, length=length)``).

  Overlap-adds windowed inverse FFT frames, divides by the overlap-added squared window,
  removes the centre padding and crops (or zero-pads) to ``length``.

  Args:
    spec: (..., n_fft // 2 + 1, frames) complex spectrum.
    n_fft: window and FFT length.
    length: number of output samples.
    hop: hop size, default ``n_fft // 2``.

  Returns:
    (..., length) float32 waveform.
  """
  hop = hop or n_fft // 2
  frames = spec.shape[-1]
  if spec.shape[-2] != n_fft // 2 + 1:
    raise ValueError(f"spectrum has {spec.shape[-2]} bins, expected {n_fft // 2 + 1} for n_fft={n_fft}")
  wav = _overlap_add(synthesis_frames(spec, n_fft), hop)
  start = n_fft // 2
  env = window_envelope(n_fft, hop, frames)[start:start + length]
  wav = wav[..., start:start + length]
  available = wav.shape[-1]
  # Outside the region covered by frames torch leaves zeros; the envelope is only used inside.
  wav = wav / env[:available]
  if available < length:
    wav = jnp.pad(wav, [(0, 0)] * (wav.ndim - 1) + [(0, length - available)])
  return wav


def multi_stft(x: jnp.ndarray, windows: Sequence[int]) -> tuple[jnp.ndarray, ...]:
  """STFT of ``x (..., samples)`` for each window: ``(..., window // 2 + 1, frames)`` complex
  (hop = window / 2; the discriminator's and the multi-resolution loss's resolutions)."""
  return tuple(stft(x, w, w // 2) for w in windows)
