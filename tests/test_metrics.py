import warnings

import numpy as np
import pytest

from apollo_jax.evaluation import metrics

SR = 44100


def _signals(samples=8000, seed=0):
  rng = np.random.default_rng(seed)
  ref = rng.standard_normal((2, samples)).astype(np.float32)
  return ref, rng


def test_identical_signals():
  ref, _ = _signals()
  assert metrics.sdr(ref, ref) == np.inf  # BSSEval's value for a perfect estimate.
  assert metrics.si_snr(ref, ref) > 90  # eps-limited: 10 log10(|r|^2 / eps)
  assert metrics.lsd(ref, ref) == 0.0


def test_scaled_signals():
  ref, _ = _signals()
  # SDR's filter and SI-SNR's projection absorb any gain; LSD sees it exactly.
  assert metrics.sdr(ref, 0.5 * ref) > 100
  assert metrics.si_snr(ref, 0.5 * ref) > 90
  np.testing.assert_allclose(metrics.lsd(ref, 2 * ref), np.log10(4.0), rtol=1e-5)
  np.testing.assert_allclose(metrics.lsd(ref, 0.5 * ref), np.log10(4.0), rtol=1e-5)


def test_known_snr():
  # White reference plus independent white noise 20 dB down: every metric finds ~20 dB.
  ref, rng = _signals(44100)
  noise = rng.standard_normal(ref.shape).astype(np.float32)
  noise *= 0.1 * np.linalg.norm(ref, axis=-1, keepdims=True) / np.linalg.norm(noise, axis=-1, keepdims=True)
  est = ref + noise
  assert abs(metrics.si_snr(ref, est) - 20.0) < 0.2
  # SDR's 512-tap filter also absorbs ~512/N of the noise, so it sits slightly above SNR.
  assert 20.0 <= metrics.sdr(ref, est) < 20.3


def test_pure_noise():
  ref, rng = _signals()
  noise = rng.standard_normal(ref.shape).astype(np.float32)
  n = ref.shape[-1]
  # SI-SNR: the projection of independent noise carries ~1/N of its energy.
  assert metrics.si_snr(ref, noise) < -20
  # SDR: the 512-tap filter explains ~512/N of it, 10 log10(p / (1 - p)) ~ -11.7 dB here.
  p = metrics.SDR_FILTER_TAPS / n
  assert abs(metrics.sdr(ref, noise) - 10 * np.log10(p / (1 - p))) < 1.0
  assert metrics.lsd(ref, noise) > 0.5


def test_si_snr_scale_and_offset_invariance():
  ref, rng = _signals()
  est = ref + 0.3 * rng.standard_normal(ref.shape).astype(np.float32)
  base = metrics.si_snr(ref, est)
  for gain in (0.1, 0.7, 5.0, -2.0):  # (tiny gains only meet the eps terms)
    np.testing.assert_allclose(metrics.si_snr(ref, gain * est), base, atol=1e-5)
  # SI-SNR removes the mean; SI-SDR does not.
  np.testing.assert_allclose(metrics.si_snr(ref, est + 0.5), base, atol=1e-6)
  assert metrics.si_sdr(ref, est + 0.5) < base - 1


def test_sdr_matches_mir_eval():
  mir_eval = pytest.importorskip("mir_eval")
  ref, rng = _signals(4000, seed=3)
  # A filtered, noisy estimate with a DC offset: exercises the filter and zero_mean.
  est = np.stack([np.convolve(r, [0.9, 0.2, -0.1], mode="same") for r in ref])
  est = est + 0.2 * rng.standard_normal(ref.shape) + 0.1
  centre = lambda x: x - x.mean(-1, keepdims=True)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # bss_eval_sources is deprecated in 0.8
    expected = mir_eval.separation.bss_eval_sources(centre(ref), centre(est))[0].mean()
  np.testing.assert_allclose(metrics.sdr(ref, est), expected, atol=1e-3)


def test_batched_shapes_and_silent_channels():
  ref, rng = _signals(4000)
  est = ref + 0.1 * rng.standard_normal(ref.shape).astype(np.float32)
  batch_ref, batch_est = np.stack([ref, ref]), np.stack([est, 0.5 * est])
  for fn in (metrics.sdr, metrics.si_snr, metrics.lsd):
    out = fn(batch_ref, batch_est)
    assert out.shape == (2,)
    np.testing.assert_allclose(out[0], fn(ref, est), rtol=1e-6)
  # A silent reference channel is left out of SDR; an all-silent pair gives nan, not a crash.
  half = ref.copy()
  half[1] = 0
  np.testing.assert_allclose(metrics.sdr(half, est), metrics.sdr(ref[:1], est[:1]))
  assert np.isnan(metrics.sdr(np.zeros_like(ref), est))
  assert np.isnan(metrics.sdr(ref, np.zeros_like(est)))


def test_bad_input_is_clear():
  ref, _ = _signals()
  with pytest.raises(ValueError, match="same shape"):
    metrics.sdr(ref, ref[:, :100])
  with pytest.raises(ValueError, match="channels, samples"):
    metrics.si_snr(ref[0], ref[0])
  with pytest.raises(ValueError, match="unknown metrics"):
    metrics.score(ref, ref, SR, ("pesq",))


@pytest.mark.slow
def test_visqol_known_values():
  # Few calls: ViSQOL costs ~2-3 s per call here, plus a one-off numba compile.
  rng = np.random.default_rng(0)
  t = np.arange(3 * SR) / SR
  music = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 2 * t)) + 0.05 * rng.standard_normal(t.shape)
  ref = np.stack([music, music]).astype(np.float32)
  identical = metrics.visqol(ref, ref, SR)
  assert 4.6 < identical < 4.8  # ViSQOL v3's ceiling for identical audio is ~4.73
  noisy = metrics.visqol(ref, ref + 0.05 * rng.standard_normal(ref.shape).astype(np.float32), SR)
  assert 1.0 <= noisy < identical - 0.2
