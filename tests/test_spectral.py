import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from apollo_jax import spectral


@pytest.mark.parametrize("n_fft", [32, 64, 882, 960, 2048])
@pytest.mark.parametrize("samples", [4410, 4411, 5000])
def test_stft_matches_librosa(n_fft, samples):
  x = np.random.default_rng(n_fft + samples).standard_normal((2, samples)).astype(np.float32)
  ours = np.asarray(spectral.stft(jnp.asarray(x), n_fft))
  ref = librosa.stft(x.astype(np.float64), n_fft=n_fft, hop_length=n_fft // 2,
                     window=spectral.hann_window(n_fft).astype(np.float64), center=True,
                     pad_mode="reflect")
  assert ours.shape == ref.shape == (2, n_fft // 2 + 1, 1 + samples // (n_fft // 2))
  np.testing.assert_allclose(ours, ref, atol=2e-4 * np.sqrt(n_fft), rtol=0)


def test_stft_odd_hop_uses_general_framing():
  x = np.random.default_rng(0).standard_normal(3000).astype(np.float32)
  ours = np.asarray(spectral.stft(jnp.asarray(x), 256, hop=100))
  ref = librosa.stft(x.astype(np.float64), n_fft=256, hop_length=100,
                     window=spectral.hann_window(256).astype(np.float64), pad_mode="reflect")
  np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)


@pytest.mark.parametrize("n_fft", [32, 882, 960, 2048])
@pytest.mark.parametrize("samples", [4410, 4411, 6001])
def test_istft_inverts_stft(n_fft, samples):
  x = np.random.default_rng(samples).standard_normal((3, samples)).astype(np.float32)
  y = spectral.istft(spectral.stft(jnp.asarray(x), n_fft), n_fft, samples)
  assert y.shape == x.shape
  np.testing.assert_allclose(np.asarray(y), x, atol=1e-5, rtol=0)


def test_istft_matches_librosa():
  rng = np.random.default_rng(1)
  spec = (rng.standard_normal((442, 20)) + 1j * rng.standard_normal((442, 20))).astype(np.complex64)
  ours = np.asarray(spectral.istft(jnp.asarray(spec), 882, 8500))
  ref = librosa.istft(spec.astype(np.complex128), n_fft=882, hop_length=441,
                      window=spectral.hann_window(882).astype(np.float64), center=True, length=8500)
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
