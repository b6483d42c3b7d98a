"""Losses: parity with losses.json and the properties the training step relies on."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from apollo_jax.gan import losses
from apollo_jax.gan.discriminator import WINDOWS, Discriminator
from apollo_jax.spectral import multi_stft
from apollo_jax.checkpoints.published import load_torch_discriminator


@pytest.mark.slow
def test_losses_match_published(parity):
  ref = json.loads((parity / "losses.json").read_text())
  variables = load_torch_discriminator(str(parity / "disc_small.safetensors"))
  target, est = np.load(parity / "input.npy"), np.load(parity / "output.npy")
  disc = Discriminator()

  @jax.jit
  def all_losses(v, target, est):
    real_scores, real_feats = disc.apply(v, target)
    fake_scores, fake_feats = disc.apply(v, est)
    rec = losses.multi_resolution_stft_loss(est, target)
    g = rec + losses.lsgan_g_loss(fake_scores) + losses.feature_matching_loss(fake_feats, real_feats)
    return losses.lsgan_d_loss(real_scores, fake_scores), rec, g

  loss_d, rec, loss_g = map(float, all_losses(variables, target, est))
  for got, key in ((loss_d, "loss_d"), (rec, "freq_MAE"), (loss_g, "loss_g_total")):
    assert abs(got - ref[key]) <= 1e-4 * abs(ref[key]), (key, got, ref[key])


@pytest.mark.slow
def test_reconstruction_loss_properties():
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((2, 2, 4096)), jnp.float32)
  rec = jax.jit(losses.multi_resolution_stft_loss)
  assert float(rec(a, a)) == 0.0
  # Scale invariant in the target's level (normalised by mean |S(target)|).
  b = a + 0.1 * jnp.asarray(rng.standard_normal(a.shape), jnp.float32)
  l1 = rec(b, a)
  np.testing.assert_allclose(float(l1), float(rec(3 * b, 3 * a)), rtol=1e-5)
  # Precomputed spectra give the same value.
  same = jax.jit(lambda b, a: losses.stft_magnitude_loss(multi_stft(b, WINDOWS), multi_stft(a, WINDOWS)))(b, a)
  np.testing.assert_allclose(float(same), float(l1), rtol=1e-6)
  # Finite gradient at an all-zero estimate (|0| has no direction).
  g = jax.jit(jax.grad(lambda e: losses.multi_resolution_stft_loss(e, a)))(jnp.zeros_like(a))
  assert bool(jnp.all(jnp.isfinite(g)))


def test_lsgan_values():
  ones, zeros = (jnp.ones((1, 3, 3, 1)),) * 2, (jnp.zeros((1, 3, 3, 1)),) * 2
  assert float(losses.lsgan_d_loss(ones, zeros)) == 0.0
  assert float(losses.lsgan_d_loss(zeros, ones)) == 2.0
  assert float(losses.lsgan_g_loss(ones)) == 0.0
  assert float(losses.lsgan_g_loss(zeros)) == 1.0


def test_feature_matching_treats_real_maps_as_constants():
  fake = ((jnp.full((1, 2, 2, 3), 2.0),),)
  real = ((jnp.full((1, 2, 2, 3), 1.0),),)
  np.testing.assert_allclose(float(losses.feature_matching_loss(fake, real)), 1.0, rtol=1e-6)
  g_real = jax.grad(lambda r: losses.feature_matching_loss(fake, r))(real)
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g_real))


def test_log_magnitude_loss_charges_energy_where_the_target_is_silent():
  """Zero for equal spectra; a faint wrong band where the target is silent costs far more
  than it does in the linear loss, and the floor keeps exact zeros finite."""
  rng = np.random.default_rng(0)
  n, rate = 2048, 44100
  low = np.sin(2 * np.pi * 440 * np.arange(n) / rate)[None, None].astype(np.float32)
  band = np.fft.rfft(rng.standard_normal(n))
  band[np.fft.rfftfreq(n, 1 / rate) < 11000] = 0  # noise above 11 kHz only
  hiss = (np.fft.irfft(band, n) * 1e-3)[None, None].astype(np.float32)

  @jax.jit
  def both(est, target):
    e, t = multi_stft(est, (256,)), multi_stft(target, (256,))
    return losses.stft_magnitude_loss(e, t), losses.log_magnitude_loss(e, t)

  assert float(both(low, low)[1]) < 1e-6
  lin, log = map(float, both(low + hiss, low))
  assert lin < 0.01 and log > 0.5, (lin, log)
  # Near-silent estimate against silence: every bin at the floor, finite gradient.
  zeros = jnp.zeros((1, 1, n), jnp.float32)
  g = jax.jit(jax.grad(lambda e: both(e, zeros)[1]))(jnp.asarray(rng.standard_normal((1, 1, n)) * 1e-7, jnp.float32))
  assert bool(jnp.all(jnp.isfinite(g)))
