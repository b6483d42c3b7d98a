"""Runs a generator exported with ``interop export --format onnx``: numpy + onnxruntime only.

  python scripts/run_onnx.py apollo.onnx in.npy out.npy

``in.npy`` is float32 (batch, channels, samples) of the exported shape at the exported
sample rate. The ONNX file holds the spectral core (spectrum -> spectrum); the STFT and
inverse STFT with the published conventions (periodic Hann window, reflect padding of
n_fft // 2, hop n_fft // 2, no normalisation) are done here in numpy.
"""

import sys

import numpy as np


def hann(n_fft: int) -> np.ndarray:
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  """(rows, samples) -> (rows, n_fft // 2 + 1, frames) complex."""
  pad = n_fft // 2
  frames = 1 + x.shape[-1] // hop
  xp = np.pad(x, [(0, 0), (pad, pad)], mode="reflect")
  need = (frames - 1) * hop + n_fft
  xp = np.pad(xp, [(0, 0), (0, max(0, need - xp.shape[-1]))])
  idx = np.arange(frames)[:, None] * hop + np.arange(n_fft)[None, :]
  return np.swapaxes(np.fft.rfft(xp[:, idx] * hann(n_fft), n=n_fft, axis=-1), -1, -2)


def istft(spec: np.ndarray, n_fft: int, hop: int, length: int) -> np.ndarray:
  """(rows, bins, frames) complex -> (rows, length) float32 (overlap-add / squared window)."""
  frames = spec.shape[-1]
  w = hann(n_fft)
  parts = np.fft.irfft(np.swapaxes(spec, -1, -2), n=n_fft, axis=-1) * w
  total = n_fft + hop * (frames - 1)
  out = np.zeros((spec.shape[0], total))
  env = np.zeros(total)
  for t in range(frames):
    out[:, t * hop:t * hop + n_fft] += parts[:, t]
    env[t * hop:t * hop + n_fft] += w.astype(np.float64) ** 2
  start = n_fft // 2
  out, env = out[:, start:start + length], env[start:start + length]
  y = np.zeros((spec.shape[0], length))
  y[:, :out.shape[1]] = out / env
  return y.astype(np.float32)


def restore(session, meta: dict, x: np.ndarray) -> np.ndarray:
  """(batch, channels, samples) float32 -> same, through the ONNX spectral core."""
  n_fft, hop = int(meta["n_fft"]), int(meta["hop"])
  b, c, s = x.shape
  spec = stft(x.reshape(b * c, s).astype(np.float64), n_fft, hop)
  re, im = session.run(None, {"real": spec.real.astype(np.float32),
                              "imag": spec.imag.astype(np.float32)})
  return istft(re.astype(np.float64) + 1j * im, n_fft, hop, s).reshape(b, c, s)


def load(model: str):
  """``(onnxruntime session, metadata dict)``."""
  import onnxruntime as ort
  session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
  return session, dict(session.get_modelmeta().custom_metadata_map)


def main(model: str, source: str, dest: str) -> None:
  session, meta = load(model)
  x = np.load(source).astype(np.float32)
  shape = tuple(int(v) for v in meta["shape"].split(","))
  if x.shape != shape:
    sys.exit(f"error: {source} is {x.shape}; this export takes {shape}")
  np.save(dest, restore(session, meta, x))


if __name__ == "__main__":
  if len(sys.argv) != 4:
    sys.exit(__doc__)
  main(*sys.argv[1:])
