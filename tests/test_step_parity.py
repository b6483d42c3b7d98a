"""Three published training steps on the fixture weights (step_parity.json / .npz).

How the fixture was made (its JSON): target = input.npy; degraded = input.npy with every
rfft bin above 5 kHz zeroed (numpy FFT of the float32 signal, per channel); G forward; D
step on the detached output; G step; AdamW as in SPEC.md; grad norms before clipping.
"""

import json

import jax
import numpy as np
import pytest

from apollo_jax.interop import (discriminator_state_dict_from_variables,
                                generator_state_dict_from_params, load_torch_discriminator,
                                load_torch_generator)
from apollo_jax.training import (create_train_state, default_train_config, make_mesh,
                                 make_train_step, shard_batch)

pytestmark = [pytest.mark.parity, pytest.mark.slow]
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


def test_parameters_after_three_steps(parity, three_steps):
  _, gen_cfg, state, _ = three_steps
  want = np.load(parity / "step_parity_params.npz")
  got = {"generator/" + k: v for k, v in generator_state_dict_from_params(gen_cfg, state.gen_params).items()}
  got |= {"discriminator/" + k: v for k, v in discriminator_state_dict_from_variables(
      {"params": state.disc_params, "spectral": state.disc_spectral}).items()}
  assert set(got) == set(want.files)
  errors = {k: float(np.abs(got[k] - want[k]).max()) for k in want.files}
  worst = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
  assert max(errors.values()) <= 1e-5, f"worst tensors: {worst}"
