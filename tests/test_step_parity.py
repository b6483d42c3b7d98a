"""Three published training steps on the fixture weights (step_parity.json / .npz).

How the fixture was made (its JSON): target = input.npy; degraded = input.npy with every
rfft bin above 5 kHz zeroed (numpy FFT of the float32 signal, per channel); G forward; D
step on the detached output; G step; AdamW as in SPEC.md; grad norms before clipping.
"""

import json

import jax
import numpy as np
import pytest

from apollo_jax.checkpoints.published import (discriminator_state_dict_from_variables,
                                              generator_state_dict_from_params,
                                              load_torch_discriminator, load_torch_generator)
from apollo_jax.training import (create_train_state, default_train_config, make_mesh,
                                 make_train_step, shard_batch)

pytestmark = pytest.mark.slow
METRICS = ("loss_d", "loss_g", "loss_g_rec", "loss_g_adv", "loss_g_fm", "grad_norm_d", "grad_norm_g")


def lowpass(x: np.ndarray, cutoff_hz: float, sample_rate: int) -> np.ndarray:
  """Zeroes every rfft bin above ``cutoff_hz`` (whole signal, last axis), as the fixture did."""
  spec = np.fft.rfft(x, axis=-1)
  spec[..., np.fft.rfftfreq(x.shape[-1], 1.0 / sample_rate) > cutoff_hz] = 0
  return np.fft.irfft(spec, n=x.shape[-1], axis=-1).astype(np.float32)


@pytest.fixture(scope="module")
def three_steps(parity):
  ref = json.loads((parity / "step_parity.json").read_text())
  gen_cfg, gen_params = load_torch_generator(str(parity / "apollo_small.safetensors"))
  disc = load_torch_discriminator(str(parity / "disc_small.safetensors"))
  cfg = default_train_config()
  mesh = make_mesh(jax.devices()[:1])
  state = create_train_state(gen_cfg, cfg, jax.random.PRNGKey(0), gen_params, disc["params"],
                             disc["spectral"], mesh=mesh)
  target = np.load(parity / "input.npy")
  cutoff = float(ref["degraded"].split("above ")[1].split(" Hz")[0])
  batch = shard_batch({"target": target, "degraded": lowpass(target, cutoff, gen_cfg.sample_rate)}, mesh)
  step = make_train_step(gen_cfg, cfg, mesh)
  metrics = []
  for _ in ref["steps"]:
    state, m = step(state, batch)
    metrics.append({k: float(v) for k, v in jax.device_get(m).items()})
  return ref, gen_cfg, jax.device_get(state), metrics


def test_losses_and_grad_norms_per_step(three_steps):
  ref, _, _, metrics = three_steps
  for want, got in zip(ref["steps"], metrics):
    for key in METRICS:
      rel = abs(got[key] - want[key]) / abs(want[key])
      assert rel <= 1e-4, f"step {want['step']} {key}: {got[key]} vs {want[key]} (rel {rel:.2g})"


def state_dicts(gen_cfg, state):
  """Our state after the steps under the fixture's names."""
  got = {"generator/" + k: v for k, v in generator_state_dict_from_params(gen_cfg, state.gen_params).items()}
  got |= {"discriminator/" + k: v for k, v in discriminator_state_dict_from_variables(
      {"params": state.disc_params, "spectral": state.disc_spectral}).items()}
  return got


def abs_errors(parity, three_steps, prefix):
  _, gen_cfg, state, _ = three_steps
  want = np.load(parity / "step_parity_params.npz")
  got = state_dicts(gen_cfg, state)
  assert set(got) == set(want.files)
  return {k: np.abs(got[k] - want[k]) for k in want.files if k.startswith(prefix)}


def test_discriminator_after_three_steps(parity, three_steps):
  # Weights, biases and spectral-norm u, v of all seven sub-discriminators.
  errors = {k: float(e.max()) for k, e in abs_errors(parity, three_steps, "discriminator/").items()}
  worst = sorted(errors.items(), key=lambda kv: -kv[1])[:3]
  assert max(errors.values()) <= 1e-5, f"worst tensors: {worst}"


# Why the generator is compared statistically: the fixture's input is low-passed at 5 kHz,
# so in most bands its STFT is float32 rounding noise (|X| ~ 4e-7 against FFT errors of
# ~2.4e-7), and the band features there differ between any two FFT implementations.
# Adam's first steps move a parameter by ~lr * sign(grad) whatever the gradient's size, so
# parameters whose gradients come from those bands (or nearly cancel) land up to 6 * lr
# apart. Measured: our own step with a differently rounded (but exact) FFT differs from
# itself by up to 5.1e-3, 3.8 % of generator entries beyond 1e-5, median 4.5e-7, 99th
# percentile 4.5e-5; against the fixture: max 5.3e-3, 4.2 % beyond 1e-5, median 4.6e-7,
# 99th percentile 5.1e-5. The discriminator's inputs carry the full band, so it is exact.
# So the 1e-5 tolerance cannot hold for every entry; what holds is checked instead: 1e-5 for
# at least 95 % of the entries (measured 95.8 %), and no entry further off than two runs of
# three Adam steps can drift apart (each step moves an entry by at most ~lr).
def test_generator_after_three_steps_mostly_exact_and_bounded(parity, three_steps):
  errors = abs_errors(parity, three_steps, "generator/")
  err = np.concatenate([e.ravel() for e in errors.values()])
  within = float(np.mean(err <= 1e-5))
  assert within >= 0.95, f"{within:.1%} of generator entries within 1e-5"
  drift = 2 * len(three_steps[0]["steps"]) * default_train_config().g_lr
  worst = sorted(((k, float(e.max())) for k, e in errors.items()), key=lambda kv: -kv[1])[:3]
  assert err.max() <= drift, f"max {err.max():.2g} > {drift:.2g}; worst tensors: {worst}"


def test_generator_after_three_steps_within_float32_noise(parity, three_steps):
  err = np.concatenate([e.ravel() for e in abs_errors(parity, three_steps, "generator/").values()])
  median, p99 = np.median(err), np.quantile(err, 0.99)
  # A wrong loss, gradient or optimiser moves most entries by ~lr = 1e-3.
  assert median <= 1e-6 and p99 <= 1e-4, f"median {median:.2g}, 99th percentile {p99:.2g}"
