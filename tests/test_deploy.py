"""Issue 13 item 4: deployable exports (StableHLO via jax.export, ONNX via jax2onnx)."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from apollo_jax import ApolloConfig, deploy, interop
from apollo_jax.inference import save_generator
from fakes import random_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ApolloConfig(feature_dim=16, num_layers=1, num_heads=2)


def _live(cfg, params, x):
  f, leaves = deploy.live_forward(cfg, params)
  return np.asarray(f(leaves, x))


def test_stablehlo_export_runs_without_apollo_jax_and_equals_the_live_model(tmp_path):
  params = random_params(TINY)
  save_generator(str(tmp_path / "ckpt"), TINY, params)
  model = tmp_path / "apollo.npz"
  r = subprocess.run([sys.executable, "-m", "apollo_jax.interop", "export", str(tmp_path / "ckpt"),
                      str(model), "--format", "stablehlo", "--batch", "1", "--channels", "2",
                      "--samples", "4410"], capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 2, 4410)).astype(np.float32)
  np.save(tmp_path / "in.npy", x)
  # A fresh interpreter that runs the script and proves apollo_jax was never imported.
  code = ("import runpy, sys; sys.argv = sys.argv[1:]; "
          "runpy.run_path(sys.argv[0], run_name='__main__'); "
          "assert not any(m.split('.')[0] == 'apollo_jax' for m in sys.modules), 'imported'")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  r = subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "scripts", "run_stablehlo.py"),
                      str(model), str(tmp_path / "in.npy"), str(tmp_path / "out.npy")],
                     capture_output=True, text=True, cwd=tmp_path, env=env)
  assert r.returncode == 0, r.stderr
  y = np.load(tmp_path / "out.npy")
  np.testing.assert_array_equal(y, _live(TINY, params, x))  # bit for bit


def test_stablehlo_export_errors(tmp_path):
  params = random_params(TINY)
  with pytest.raises(ValueError, match="shorter than one STFT window"):
    deploy.export_stablehlo(TINY, params, (1, 2, 100), str(tmp_path / "m.npz"))
  path = tmp_path / "ckpt.safetensors"
  interop.save_torch_generator(TINY, params, str(path))
  r = subprocess.run([sys.executable, "-m", "apollo_jax.interop", "export", str(path),
                      str(tmp_path / "m.onnx"), "--format", "stablehlo"], capture_output=True, text=True)
  assert r.returncode == 2 and "writes .npz files" in r.stderr and r.stderr.count("\n") == 1
