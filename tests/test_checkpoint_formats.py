"""Issue 13 item 1: every published/community checkpoint loads with the right config.

Files are written with the torch-free writer (tests/torch_zip.py) in the layouts other
trainers produce: bare state dicts at other rates, MSST (``model.`` / ``module.``,
feature_dim 384), Lightning (``audio_model.`` + ``discriminator.``), ``torch.compile``
(``_orig_mod.``).
"""

import collections
import dataclasses
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from safetensors.numpy import save_file

from apollo_jax.checkpoints import published
from apollo_jax.gan.discriminator import init_discriminator
from apollo_jax.checkpoints import load_generator, save_generator
from apollo_jax.checkpoints import CheckpointFormatError, load_torch_generator
from apollo_jax.training.config import TrainConfig
from apollo_jax.training.loop import _init_discriminator
from fakes import random_params
from tests.conftest import TINY
from torch_zip import write_torch_zip


def tiny(rate=44100, win_ms=20, feature_dim=TINY.feature_dim):
  heads = TINY.num_heads if feature_dim == TINY.feature_dim else 8
  return dataclasses.replace(TINY, sample_rate=rate, win_ms=win_ms, feature_dim=feature_dim,
                             num_heads=heads)


def bare_file(tmp_path, cfg, name="model.pth", prefix="", wrap=None, seed=0):
  """A torch zip holding only tensors (no model_args): ``(path, params)``."""
  params = random_params(cfg, seed)
  sd = collections.OrderedDict(
      (prefix + k, v) for k, v in published.generator_state_dict_from_params(cfg, params).items())
  path = str(tmp_path / name)
  write_torch_zip(path, wrap(sd) if wrap else sd)
  return path, params


def same(a, b):
  for (pa, la), (pb, lb) in zip(jax.tree_util.tree_leaves_with_path(a),
                                jax.tree_util.tree_leaves_with_path(b), strict=True):
    assert pa == pb
    np.testing.assert_array_equal(np.asarray(la), np.asarray(lb))


@pytest.mark.parametrize("rate", published.STANDARD_RATES)
def test_sample_rate_is_inferred_from_the_fft_size(tmp_path, rate):
  cfg = tiny(rate)
  path, params = bare_file(tmp_path, cfg)
  got_cfg, got = load_torch_generator(path)
  assert (got_cfg.sample_rate, got_cfg.win_ms, got_cfg.n_fft) == (rate, 20, cfg.n_fft)
  same(got, params)


def test_48k_bare_state_dict_is_48k_not_44k_with_an_odd_window(tmp_path):
  path, _ = bare_file(tmp_path, tiny(48000))
  cfg, _ = load_generator(path)
  assert (cfg.sample_rate, cfg.win_ms, cfg.hop) == (48000, 20, 480)


def test_nonstandard_fft_size_is_an_error_naming_sample_rate(tmp_path):
  path, _ = bare_file(tmp_path, tiny(40000))
  with pytest.raises(CheckpointFormatError, match="--sample-rate"):
    load_torch_generator(path)
  cfg, _ = load_torch_generator(path, sample_rate=40000)
  assert (cfg.sample_rate, cfg.win_ms) == (40000, 20)


def test_flags_override_the_inference(tmp_path):
  path, _ = bare_file(tmp_path, tiny(48000))
  cfg, _ = load_torch_generator(path, sample_rate=44100)  # the user knows better
  assert cfg.sample_rate == 44100 and cfg.n_fft == 960
  path, _ = bare_file(tmp_path, tiny(44100, win_ms=40), name="w40.pth")  # n_fft 1764
  assert load_torch_generator(path)[0].sample_rate == 88200  # 20 ms assumed
  cfg, _ = load_torch_generator(path, win_ms=40)
  assert (cfg.sample_rate, cfg.win_ms) == (44100, 40)


def test_model_args_win_over_inference_and_contradict_flags(tmp_path):
  cfg = tiny(48000)
  sd = published.generator_state_dict_from_params(cfg, random_params(cfg))
  path = str(tmp_path / "release.bin")
  write_torch_zip(path, {"model_name": "Apollo", "state_dict": sd,
                         "model_args": {"sr": 48000, "win": 20, "feature_dim": 16, "layer": 1}})
  assert load_generator(path)[0].sample_rate == 48000
  assert load_generator(path, 48000, 20)[0].sample_rate == 48000  # agreeing flags are fine
  with pytest.raises(CheckpointFormatError, match=r"model_args.*--sample-rate 44100"):
    load_generator(path, 44100)
  with pytest.raises(CheckpointFormatError, match=r"model_args.*--win-ms 25"):
    load_generator(path, win_ms=25)


def test_orbax_config_contradicting_a_flag_is_an_error(tmp_path):
  cfg = tiny(48000)
  save_generator(str(tmp_path / "ours"), cfg, random_params(cfg))
  assert load_generator(str(tmp_path / "ours"), 48000)[0] == cfg
  with pytest.raises(CheckpointFormatError, match="config.json.*--sample-rate 44100"):
    load_generator(str(tmp_path / "ours"), 44100)


def test_safetensors_without_metadata_is_inferred(tmp_path):
  cfg = tiny(32000)
  params = random_params(cfg)
  path = str(tmp_path / "bare.safetensors")
  save_file(published.generator_state_dict_from_params(cfg, params), path)
  got_cfg, got = load_generator(path)
  assert got_cfg.sample_rate == 32000
  same(got, params)


@pytest.mark.parametrize("prefix,wrap", [
    ("", lambda sd: {"state_dict": sd}),
    ("model.", lambda sd: {"state_dict": sd}),
    ("module.", None),
    ("model.", None),
    ("module.model.", lambda sd: {"state_dict": sd, "epoch": 12}),
], ids=["state_dict", "state_dict-model.", "bare-module.", "bare-model.", "module.model."])
def test_msst_universal_384_checkpoints(tmp_path, prefix, wrap):
  cfg = tiny(44100, feature_dim=384)  # MSST's "universal" models: feature_dim=384, 8 heads
  path, params = bare_file(tmp_path, cfg, "msst.ckpt", prefix, wrap)
  got_cfg, got = load_generator(path)
  assert (got_cfg.feature_dim, got_cfg.num_heads, got_cfg.sample_rate) == (384, 8, 44100)
  same(got, params)


@pytest.mark.parametrize("prefix", ["_orig_mod.", "audio_model._orig_mod.", "module._orig_mod."])
def test_torch_compile_prefixes(tmp_path, prefix):
  path, params = bare_file(tmp_path, tiny(), "compiled.pth", prefix)
  same(load_generator(path)[1], params)


def _disc_state_dict(seed=0, channels=2):
  d = init_discriminator(jax.random.PRNGKey(seed), channels=channels)
  return d, published.discriminator_state_dict_from_variables(d)


def _lightning_file(tmp_path, prefix_d="discriminator.", compiled=""):
  cfg = tiny()
  params = random_params(cfg)
  d, dsd = _disc_state_dict()
  state = collections.OrderedDict()
  for k, v in published.generator_state_dict_from_params(cfg, params).items():
    state[f"audio_model.{compiled}{k}"] = v
  for k, v in dsd.items():
    state[f"{prefix_d}{compiled}{k}"] = v
  path = str(tmp_path / "last.ckpt")
  write_torch_zip(path, {"epoch": 3, "global_step": 1200, "state_dict": state,
                         "optimizer_states": [], "lr_schedulers": []})
  return path, cfg, params, d


@pytest.mark.parametrize("compiled", ["", "_orig_mod."], ids=["plain", "compiled"])
def test_lightning_ckpt_loads_generator_and_discriminator(tmp_path, compiled):
  path, cfg, params, d = _lightning_file(tmp_path, compiled=compiled)
  got_cfg, got = load_generator(path)
  assert got_cfg == cfg
  same(got, params)
  assert published.has_torch_discriminator(path)
  same(published.load_torch_discriminator(path), d)


def test_train_init_from_uses_the_lightning_discriminator(tmp_path):
  path, _, _, d = _lightning_file(tmp_path)
  config = ml_collections.ConfigDict({"init_from": path})
  params, spectral = _init_discriminator(config, TrainConfig())
  same({"params": params, "spectral": spectral}, d)
  bare, _ = bare_file(tmp_path, tiny())
  assert _init_discriminator(ml_collections.ConfigDict({"init_from": bare}), TrainConfig()) == (None, None)
  with pytest.raises(CheckpointFormatError, match="discriminator tensor shapes"):  # a D for stereo
    _init_discriminator(config, TrainConfig(channels=1))
  with pytest.raises(CheckpointFormatError, match="discriminator tensor shapes"):  # width 8
    _init_discriminator(config, TrainConfig(d_hidden=4))


def _cli(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)


@pytest.mark.slow
def test_convert_and_restore_take_sample_rate_flags(tmp_path):
  path, _ = bare_file(tmp_path, tiny(48000))
  out = tmp_path / "converted"
  r = _cli("apollo_jax.interop", "convert", path, str(out))
  assert r.returncode == 0 and "sample_rate=48000" in r.stdout, r.stderr
  r = _cli("apollo_jax.interop", "convert", str(out), str(tmp_path / "again"), "--sample-rate", "44100")
  assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--sample-rate 44100" in r.stderr
  odd, _ = bare_file(tmp_path, tiny(40000), name="odd.pth")
  wav = tmp_path / "in.wav"
  import soundfile as sf
  sf.write(wav, np.zeros((4000, 1), np.float32), 40000)
  for extra in ([], ["--stream"]):
    r = _cli("apollo_jax.restore", str(wav), "-o", str(tmp_path / "o.wav"), "--checkpoint", odd, *extra)
    assert r.returncode == 2 and "--sample-rate" in r.stderr and r.stderr.count("\n") == 1, r.stderr
  r = _cli("apollo_jax.restore", str(wav), "-o", str(tmp_path / "o.wav"), "--checkpoint", odd,
           "--sample-rate", "40000", "--quiet")
  assert r.returncode == 0, r.stderr


def test_eval_and_train_init_from_take_the_rate(tmp_path):
  import eval as eval_script
  from apollo_jax.training.loop import _init_generator
  path, params = bare_file(tmp_path, tiny(40000))
  (tmp_path / "data").mkdir()
  import soundfile as sf
  sf.write(tmp_path / "data" / "a.wav", np.zeros((40000, 1), np.float32), 40000)
  argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--checkpoint", path,
          "--metrics", "si_snr", "--bitrates", "64", "--workers", "0"]
  assert eval_script.main(argv) == 2  # 40 kHz is not a standard rate: --sample-rate needed
  systems = __import__("apollo_jax.evaluation.evaluate").evaluation.evaluate.load_systems([path], "mp3", 40000)
  assert systems[1].cfg.sample_rate == 40000
  config = ml_collections.ConfigDict({"init_from": path})
  same(_init_generator(config, tiny(40000)), params)  # the config's rate stands in for the flag
  with pytest.raises(ValueError, match="do not match sample_rate=44100"):
    _init_generator(config, tiny(44100))
