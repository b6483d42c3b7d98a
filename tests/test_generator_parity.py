"""Generator vs tensors made with the published PyTorch implementation."""

import json

import jax
import numpy as np
import pytest

from apollo_jax import Apollo
from apollo_jax.checkpoints.published import load_torch_generator

TOL = 1e-4  # SPEC.md: max abs error on outputs, float32 on CPU.


@pytest.fixture(scope="module")
def loaded(parity):
  cfg, params = load_torch_generator(str(parity / "apollo_small.safetensors"))
  return cfg, params


def test_config_read_from_fixture(parity, loaded):
  cfg, _ = loaded
  meta = json.loads((parity / "meta.json").read_text())["generator"]
  assert cfg.sample_rate == meta["sr"]
  assert cfg.n_fft == meta["n_fft"] and cfg.hop == meta["hop"]
  assert cfg.feature_dim == meta["feature_dim"] and cfg.num_layers == meta["layer"]
  assert list(cfg.band_widths) == meta["band_width"]


def test_output_matches_published(parity, loaded):
  cfg, params = loaded
  x = np.load(parity / "input.npy")
  want = np.load(parity / "output.npy")
  got = jax.jit(lambda p, x: Apollo(cfg).apply({"params": p}, x))(params, x)
  assert got.shape == want.shape
  assert np.abs(np.asarray(got) - want).max() <= TOL


@pytest.mark.slow
def test_intermediates_match_published(parity, loaded):
  cfg, params = loaded
  ref = np.load(parity / "gen_intermediates.npz")
  out, state = Apollo(cfg).apply({"params": params}, ref["input"], mutable=["intermediates"])
  it = state["intermediates"]
  to_published = lambda a: np.transpose(np.asarray(a), (0, 2, 3, 1))  # (n,t,k,f)->(n,k,f,t)
  spec = np.asarray(it["spectrum"][0])
  est = np.asarray(it["est_spectrum"][0])
  got = {
      "stft_real": spec.real, "stft_imag": spec.imag,
      "subband_power": np.swapaxes(np.asarray(it["band_split"]["band_power"][0]), 1, 2),
      "band_split_feature": to_published(it["band_features"][0]),
      "est_spec_real": est.real, "est_spec_imag": est.imag, "output": np.asarray(out),
  }
  for layer in range(cfg.num_layers):
    got[f"bsnet_{layer}"] = to_published(it[f"block_{layer}"]["output"][0])
  for name in ref.files:
    if name == "input":
      continue
    assert name in got, f"no counterpart for intermediate {name}"
    want = ref[name]
    # Unnormalised spectra scale with the signal; compare them relative to their peak.
    scale = max(1.0, float(np.abs(want).max()))
    err = np.abs(got[name] - want).max() / scale
    assert err <= TOL, f"{name}: max error {err:.3g}"
