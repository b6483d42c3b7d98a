"""Issue 13 item 4: deployable exports (StableHLO via jax.export, ONNX via jax2onnx)."""

import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from apollo_jax import Apollo
from apollo_jax.checkpoints import published
from apollo_jax.inference import deploy
from apollo_jax.checkpoints import save_generator
from fakes import random_params
from tests.conftest import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _live(cfg, params, x):
  f, leaves = deploy.live_forward(cfg, params)
  return np.asarray(f(leaves, x))


@pytest.mark.slow
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
  readme_forward = jax.jit(lambda p, x: Apollo(TINY).apply({"params": p}, x))  # README's API
  np.testing.assert_array_equal(y, np.asarray(readme_forward(params, x)))


def test_stablehlo_export_errors(tmp_path):
  params = random_params(TINY)
  with pytest.raises(ValueError, match="shorter than one STFT window"):
    deploy.export_stablehlo(TINY, params, (1, 2, 100), str(tmp_path / "m.npz"))
  path = tmp_path / "ckpt.safetensors"
  published.save_torch_generator(TINY, params, str(path))
  r = subprocess.run([sys.executable, "-m", "apollo_jax.interop", "export", str(path),
                      str(tmp_path / "m.onnx"), "--format", "stablehlo"], capture_output=True, text=True)
  assert r.returncode == 2 and "writes .npz files" in r.stderr and r.stderr.count("\n") == 1


def _onnx_extra():
  missing = [m for m in ("jax2onnx", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
  if missing:
    pytest.skip(f"optional extra not installed ({', '.join(missing)}): "
                f"pip install -r requirements-onnx.txt")


def _runner():
  spec = importlib.util.spec_from_file_location("run_onnx", os.path.join(ROOT, "scripts", "run_onnx.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


@pytest.mark.slow
def test_onnx_export_matches_the_jax_forward_on_the_parity_input(parity, tmp_path):
  _onnx_extra()
  cfg, params = published.load_torch_generator(str(parity / "apollo_small.safetensors"))
  x = np.load(parity / "input.npy")
  path = str(tmp_path / "apollo.onnx")
  deploy.export_onnx(cfg, params, x.shape, path)
  run = _runner()
  session, meta = run.load(path)
  assert (int(meta["n_fft"]), int(meta["sample_rate"])) == (cfg.n_fft, cfg.sample_rate)
  y = run.restore(session, meta, x)
  err = float(np.max(np.abs(y - _live(cfg, params, x))))
  print(f"onnxruntime vs JAX forward: max abs error {err:.3g}")
  assert err <= 1e-4


@pytest.mark.slow
def test_onnx_command_line_and_missing_extra(tmp_path, monkeypatch):
  _onnx_extra()
  params = random_params(TINY)
  path = tmp_path / "ckpt.safetensors"
  published.save_torch_generator(TINY, params, str(path))
  r = subprocess.run([sys.executable, "-m", "apollo_jax.interop", "export", str(path),
                      str(tmp_path / "m.onnx"), "--format", "onnx", "--channels", "1",
                      "--samples", "4410"], capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  x = np.random.default_rng(1).uniform(-0.5, 0.5, (1, 1, 4410)).astype(np.float32)
  np.save(tmp_path / "in.npy", x)
  r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "run_onnx.py"),
                      str(tmp_path / "m.onnx"), str(tmp_path / "in.npy"), str(tmp_path / "out.npy")],
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stderr
  assert np.max(np.abs(np.load(tmp_path / "out.npy") - _live(TINY, params, x))) <= 1e-4
  monkeypatch.setitem(sys.modules, "jax2onnx", None)  # as if the extra were absent
  with pytest.raises(ValueError, match="requirements-onnx.txt"):
    deploy.export_onnx(TINY, params, (1, 1, 4410), str(tmp_path / "n.onnx"))
