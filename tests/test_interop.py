"""Reading published checkpoints safely, converting and exporting them (apollo_jax.checkpoints, python -m apollo_jax.interop)."""

import collections
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from apollo_jax import ApolloConfig
from apollo_jax.checkpoints import published
from apollo_jax.cli import interop as interop_cli
from apollo_jax.checkpoints import load_generator, save_generator
from apollo_jax.checkpoints import CheckpointFormatError, UnsafeCheckpointError, load_torch_generator
from fakes import random_params
from tests.conftest import TINY
from torch_zip import write_malicious_zip, write_torch_zip



def assert_same_params(a, b):
  flat_a = jax.tree_util.tree_leaves_with_path(a)
  flat_b = dict(jax.tree_util.tree_leaves_with_path(b))
  assert len(flat_a) == len(flat_b)
  for path, leaf in flat_a:
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(flat_b[path]), err_msg=str(path))


@pytest.fixture(scope="module")
def small(parity):
  """The parity generator: its state dict and what load_torch_generator makes of it."""
  path = str(parity / "apollo_small.safetensors")
  return load_file(path), load_torch_generator(path)


def _release(sd):
  return {"model_name": "Apollo", "state_dict": collections.OrderedDict(sd),
          "model_args": {"sr": 44100, "win": 20, "feature_dim": 64, "layer": 2}}


def _lightning(sd):
  state = collections.OrderedDict((f"audio_model.{k}", v) for k, v in sd.items())
  state["discriminator.discriminators.0.discriminator.6.bias"] = np.zeros(1, np.float32)
  return {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.1.0",
          "state_dict": state, "loops": {"fit_loop": {"epoch_progress": [1, 2.5, None, True]}},
          "optimizer_states": [], "lr_schedulers": []}


@pytest.mark.parametrize("fortran", [False, True], ids=["contiguous", "strided"])
@pytest.mark.parametrize("make", [_release, _lightning, collections.OrderedDict],
                         ids=["release", "lightning", "bare"])
def test_torch_zip_formats_load_like_safetensors(tmp_path, small, make, fortran):
  sd, (cfg, params) = small
  path = str(tmp_path / "apollo.ckpt")
  write_torch_zip(path, make(sd), fortran=fortran)
  got_cfg, got = load_torch_generator(path)
  assert got_cfg == cfg
  assert_same_params(got, params)


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
  marker = tmp_path / "pwned"
  path = str(tmp_path / "evil.pth")
  write_malicious_zip(path, f"touch {marker}")
  with pytest.raises(UnsafeCheckpointError, match=r"os\.system"):
    load_torch_generator(path)
  assert not marker.exists()
  with pytest.raises(UnsafeCheckpointError, match=r"os\.system"):
    load_generator(path)
  assert not marker.exists()
  # The payload is real: a plain pickle.load would have run it.
  code = ("import pickle, sys, zipfile; "
          "pickle.loads(zipfile.ZipFile(sys.argv[1]).read('archive/data.pkl'))")
  subprocess.run([sys.executable, "-c", code, path], check=True)
  assert marker.exists()


def test_inconsistent_checkpoints_are_refused(tmp_path, small):
  sd, _ = small
  bad_args = _release(sd)
  bad_args["model_args"]["feature_dim"] = 128
  write_torch_zip(str(tmp_path / "args.pth"), bad_args)
  with pytest.raises(CheckpointFormatError, match="feature_dim=128"):
    load_torch_generator(str(tmp_path / "args.pth"))

  bad_shape = dict(sd)
  bad_shape["net.0.band_net.output.weight"] = np.zeros((64, 32, 1), np.float32)
  save_file(bad_shape, str(tmp_path / "shape.safetensors"))
  with pytest.raises(CheckpointFormatError, match="inconsistent"):
    load_torch_generator(str(tmp_path / "shape.safetensors"))

  (tmp_path / "notes.pth").write_text("not a checkpoint")
  with pytest.raises(CheckpointFormatError, match="not a PyTorch zip"):
    load_torch_generator(str(tmp_path / "notes.pth"))
  (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 100)
  with pytest.raises(CheckpointFormatError, match="safetensors"):
    load_torch_generator(str(tmp_path / "broken.safetensors"))


def test_import_export_import_is_exact(tmp_path, parity, small):
  sd, (cfg, params) = small
  out = str(tmp_path / "back.safetensors")
  published.save_torch_generator(cfg, params, out)
  back = load_file(out)
  assert set(back) == set(sd)
  for k in sd:
    if k.endswith(("cos_freq", "sin_freq")):  # fixed buffers, recomputed in float32
      np.testing.assert_allclose(back[k], sd[k], atol=1e-6, rtol=0)
    else:
      np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
  cfg2, params2 = load_torch_generator(out)
  assert cfg2 == cfg
  assert_same_params(params2, params)


def test_convert_and_export_cli(tmp_path, parity, small, capsys):
  _, (cfg, params) = small
  src = str(parity / "apollo_small.safetensors")
  out_dir = str(tmp_path / "small")
  assert interop_cli.main(["convert", src, out_dir]) == 0
  assert sorted(os.listdir(out_dir)) == ["config.json", "params"]
  assert ApolloConfig.from_json(open(os.path.join(out_dir, "config.json")).read()) == cfg
  cfg2, params2 = load_generator(out_dir)
  assert cfg2 == cfg
  assert_same_params(params2, params)

  exported = str(tmp_path / "small.safetensors")
  assert interop_cli.main(["export", out_dir, exported]) == 0
  cfg3, params3 = load_torch_generator(exported)
  assert cfg3 == cfg
  assert_same_params(params3, params)

  capsys.readouterr()
  for argv in (["convert", src, out_dir],                        # exists
               ["export", out_dir, str(tmp_path / "x.bin")],     # wrong extension
               ["convert", str(tmp_path / "missing.pth"), str(tmp_path / "m")]):
    assert interop_cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
  assert not os.path.exists(tmp_path / "m") and not os.path.exists(tmp_path / "x.bin")
  assert interop_cli.main(["convert", src, out_dir, "--overwrite"]) == 0


def test_interop_module_entry_point(tmp_path, parity):
  out = tmp_path / "small"
  env = {**os.environ, "PYTHONPATH": str(published.__file__).rsplit("/apollo_jax/", 1)[0]}
  r = subprocess.run([sys.executable, "-m", "apollo_jax.interop", "convert",
                      str(parity / "apollo_small.safetensors"), str(out)],
                     capture_output=True, text=True, env=env)
  assert r.returncode == 0, r.stderr
  assert (out / "config.json").exists() and (out / "params").is_dir()


def _manager_tree(params, offset):
  p = jax.tree.map(lambda a: np.asarray(a) + offset, params)
  return {"generator": {"params": p, "opt_state": [{"mu": p, "nu": p}]},
          "discriminator": {"params": {"conv": np.ones(3, np.float32)}}, "step": np.int32(offset)}


def test_load_from_training_checkpoint_manager(tmp_path):
  import orbax.checkpoint as ocp
  params = random_params(TINY)
  root = str(tmp_path / "run")
  with ocp.CheckpointManager(root) as mgr:
    for step in (1, 2):
      mgr.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(_manager_tree(params, step)),
          config=ocp.args.JsonSave({"model": json.loads(TINY.to_json()), "lr": 1e-3})))
    # A later step without generator params (e.g. discriminator-only) is passed over.
    mgr.save(3, args=ocp.args.Composite(
        other=ocp.args.StandardSave({"discriminator": {"conv": np.ones(3, np.float32)}})))
    mgr.wait_until_finished()
  cfg, got = load_generator(root)
  assert cfg == TINY
  assert_same_params(got, jax.tree.map(lambda a: np.asarray(a) + 2, params))
  # Pointing at one step works too.
  _, got1 = load_generator(os.path.join(root, "1"))
  assert_same_params(got1, jax.tree.map(lambda a: np.asarray(a) + 1, params))


def test_orbax_params_dir_checks_shapes_against_config(tmp_path):
  params = random_params(TINY)
  d = str(tmp_path / "ckpt")
  save_generator(d, TINY, params)
  cfg, got = load_generator(d)
  assert cfg == TINY
  assert_same_params(got, params)
  wider = ApolloConfig(feature_dim=32, num_layers=1, num_heads=2)
  with open(os.path.join(d, "config.json"), "w") as f:
    f.write(wider.to_json())
  with pytest.raises(CheckpointFormatError, match="inconsistent with feature_dim=32"):
    load_generator(d)
  os.remove(os.path.join(d, "config.json"))
  with pytest.raises(CheckpointFormatError, match="no generator config"):
    load_generator(d)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(CheckpointFormatError, match="not a checkpoint directory"):
    load_generator(str(empty))
  with pytest.raises(FileExistsError):
    save_generator(d, TINY, params)
