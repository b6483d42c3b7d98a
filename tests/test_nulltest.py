"""Issue 13 item 3: the null test (apollo_jax.evaluation.nulltest, ``interop compare``)."""

import math
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

from apollo_jax import Apollo
from apollo_jax.evaluation import nulltest
from apollo_jax.checkpoints.published import load_torch_generator


def test_compare_arrays_numbers():
  ref = np.full((2, 1000), 0.5, np.float32)
  ours = ref.copy()
  ours[0, 10] += 0.01
  r = nulltest.compare_arrays(ref, ours)
  res_power = 0.01 ** 2 / 2000
  assert r.residual_db == pytest.approx(10 * math.log10(res_power), abs=1e-3)
  assert r.snr_db == pytest.approx(10 * math.log10(0.25 / res_power), abs=1e-3)
  assert r.max_abs == pytest.approx(0.01, rel=1e-4)
  assert (r.samples, r.channels) == (1000, 2)
  same = nulltest.compare_arrays(ref, ref)
  assert same.residual_db == -math.inf and same.snr_db == math.inf and same.max_abs == 0
  with pytest.raises(ValueError, match="shapes differ"):
    nulltest.compare_arrays(ref, ref[:, :10])


def test_compare_command(tmp_path):
  rng = np.random.default_rng(0)
  ref = rng.uniform(-0.5, 0.5, (4410, 2)).astype(np.float32)
  sf.write(tmp_path / "ref.wav", ref, 44100, subtype="FLOAT")
  sf.write(tmp_path / "ours.wav", ref + 1e-3, 44100, subtype="FLOAT")
  sf.write(tmp_path / "short.wav", ref[:100], 44100, subtype="FLOAT")
  run = lambda *a: subprocess.run([sys.executable, "-m", "apollo_jax.interop", "compare", *a],
                                  capture_output=True, text=True)
  r = run(str(tmp_path / "ref.wav"), str(tmp_path / "ours.wav"))
  assert r.returncode == 0, r.stderr
  assert "residual -60.0 dBFS" in r.stdout and "max abs difference 0.001" in r.stdout, r.stdout
  r = run(str(tmp_path / "ref.wav"), str(tmp_path / "short.wav"))
  assert r.returncode == 2 and "lengths differ" in r.stderr and r.stderr.count("\n") == 1


def test_null_test_against_the_published_output(parity):
  """The README's numbers: our forward on the fixture input vs the published output."""
  cfg, params = load_torch_generator(str(parity / "apollo_small.safetensors"))
  x = np.load(parity / "input.npy")
  y = np.asarray(jax.jit(lambda p, x: Apollo(cfg).apply({"params": p}, x))(params, x))
  r = nulltest.compare_arrays(np.load(parity / "output.npy"), y)
  print(r.line())
  assert r.max_abs <= 1e-4 and r.snr_db > 80
