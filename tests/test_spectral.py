"""STFT/iSTFT against scipy.signal: the centred, reflect-padded convention of librosa and
torch.stft (``center=True, pad_mode="reflect"``).

scipy.signal rather than librosa: importing librosa compiles its numba kernels, about 33 s
in a fresh venv, more than the rest of this file. With ``boundary="even"`` (numpy's
"reflect"), ``padded=False`` and the ``"spectrum"`` scaling undone, scipy's STFT is
librosa's; checked on every case below: equal within 2e-14, except librosa's last frame
at n_fft 882 / 4410 samples, 1.8e-5 off where scipy equals a plain numpy
pad-frame-rfft within 8e-15 (all far inside the tolerances here).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from apollo_jax import spectral


def reference_stft(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
  """scipy's STFT (float64) as librosa.stft(center=True, pad_mode="reflect") gives it."""
  w = spectral.hann_window(n_fft).astype(np.float64)
  _, _, z = scipy.signal.stft(x.astype(np.float64), window=w, nperseg=n_fft, noverlap=n_fft - hop,
                              nfft=n_fft, detrend=False, return_onesided=True, boundary="even",
                              padded=False, axis=-1, scaling="spectrum")
  return z * w.sum()  # "spectrum" divides by the window's sum


def reference_istft(spec: np.ndarray, n_fft: int, length: int) -> np.ndarray:
  """scipy's iSTFT (hop n_fft/2) as librosa.istft(center=True, length=length) gives it:
  windowed overlap-add over the squared-window sum, the first n_fft/2 samples dropped."""
  w = spectral.hann_window(n_fft).astype(np.float64)
  # boundary=False: no trimming (done here); scipy warns that the untrimmed ends fail NOLA.
  _, y = scipy.signal.istft(spec.astype(np.complex128) / w.sum(), window=w, nperseg=n_fft,
                            noverlap=n_fft - n_fft // 2, nfft=n_fft, input_onesided=True,
                            boundary=False, scaling="spectrum")
  y = y[..., n_fft // 2:n_fft // 2 + length]
  assert y.shape[-1] == length
  return y


@pytest.mark.parametrize("n_fft", [32, 64, 882, 960, 2048])
@pytest.mark.parametrize("samples", [4410, 4411, 5000])
def test_stft_matches_reference(n_fft, samples):
  x = np.random.default_rng(n_fft + samples).standard_normal((2, samples)).astype(np.float32)
  ours = np.asarray(spectral.stft(jnp.asarray(x), n_fft))
  ref = reference_stft(x, n_fft, n_fft // 2)
  assert ours.shape == ref.shape == (2, n_fft // 2 + 1, 1 + samples // (n_fft // 2))
  np.testing.assert_allclose(ours, ref, atol=2e-4 * np.sqrt(n_fft), rtol=0)


def test_stft_odd_hop_uses_general_framing():
  x = np.random.default_rng(0).standard_normal(3000).astype(np.float32)
  ours = np.asarray(spectral.stft(jnp.asarray(x), 256, hop=100))
  ref = reference_stft(x, 256, 100)
  assert ours.shape == ref.shape == (129, 31)
  np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)


@pytest.mark.parametrize("n_fft", [32, 882, 960, 2048])
@pytest.mark.parametrize("samples", [4410, 4411, 6001])
def test_istft_inverts_stft(n_fft, samples):
  x = np.random.default_rng(samples).standard_normal((3, samples)).astype(np.float32)
  y = spectral.istft(spectral.stft(jnp.asarray(x), n_fft), n_fft, samples)
  assert y.shape == x.shape
  np.testing.assert_allclose(np.asarray(y), x, atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore:NOLA condition failed")
def test_istft_matches_reference():
  rng = np.random.default_rng(1)
  spec = (rng.standard_normal((442, 20)) + 1j * rng.standard_normal((442, 20))).astype(np.complex64)
  ours = np.asarray(spectral.istft(jnp.asarray(spec), 882, 8500))
  ref = reference_istft(spec, 882, 8500)
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_stft_is_differentiable_and_jittable():
  x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 256)), jnp.float32)
  f = jax.jit(lambda x: jnp.sum(jnp.abs(spectral.stft(x, 64)) ** 2))
  g = jax.grad(f)(x)
  # f is quadratic, so a central difference with a large step is exact up to rounding.
  e = jnp.zeros_like(x).at[0, 100].set(0.5)
  fd = (f(x + e) - f(x - e)) / 1.0
  np.testing.assert_allclose(g[0, 100], fd, rtol=1e-3)


def test_stft_too_short_is_clear_error():
  with pytest.raises(ValueError, match="needs more than 441 samples"):
    spectral.stft(jnp.zeros((1, 400)), 882)
