"""Regression tests for issue 15 ("Hardening"): one test (or more) per item, named after it."""

import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

import eval as eval_cli
from apollo_jax import ApolloConfig, audio, interop
from apollo_jax.interop import CheckpointFormatError, load_torch_generator, save_torch_generator
from apollo_jax.restore import main as restore_main
from fakes import music, random_params
from torch_zip import write_crafted_zip, write_malicious_zip, write_torch_zip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ApolloConfig(feature_dim=16, num_layers=1, num_heads=2)
RATE = TINY.sample_rate
QUIET = ["--chunk-seconds", "0.5", "--overlap-seconds", "0.1", "--quiet"]


@pytest.fixture(scope="module")
def params():
  return random_params(TINY, seed=1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, params):
  path = str(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
  save_torch_generator(TINY, params, path)
  return path


@pytest.fixture(scope="module")
def song(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("song") / "song.wav")
  audio.save(path, music(0.6, seed=3), RATE)
  return path


def run(capsys, fn, *argv):
  """Runs a CLI ``main`` in-process: ``(exit code, stderr lines)``."""
  code = fn([str(a) for a in argv])
  _, err = capsys.readouterr()
  return code, err.strip().splitlines()


def assert_one_line_error(code, err, *words):
  assert code == 2, err
  assert len(err) == 1 and err[0].startswith(("error:", "eval.py: error:")), err
  for w in words:
    assert w in err[0], err


# ---------------------------------------------------------------------------------------
# Item 4: crafted torch zips

_STORAGE = {"0": np.arange(16, dtype=np.float32).tobytes()}
CRAFTED = {
    "view_larger_than_storage": ({"w": (("0", 16), 0, (100, 100), (100, 1))}, "reaches element"),
    "offset_past_the_end": ({"w": (("0", 16), 1000, (4,), (1,))}, "outside its storage"),
    "huge_zero_stride_view": ({"w": (("0", 16), 0, (1 << 20, 1 << 20, 40), (0, 0, 0))},
                              "refusing to allocate"),
    "string_for_a_storage": ({"w": ("hello", 0, (4,), (1,))}, "must be a storage"),
    "negative_stride": ({"w": (("0", 16), 0, (4,), (-1,))}, "non-negative"),
    "float_size": ({"w": (("0", 16), 0, (4.5,), (1,))}, "non-negative integers"),
    "storage_shorter_than_declared": ({"w": (("0", 1000), 0, (4,), (1,))}, "fewer than"),
}


def _crafted(tmp_path, case):
  tensors, _ = CRAFTED[case]
  path = str(tmp_path / f"{case}.pth")
  write_crafted_zip(path, tensors, _STORAGE)
  return path


def _zero_width_feature_dim(tmp_path, parity):
  """The parity state dict with every feature dimension 0 wide."""
  sd = load_file(str(parity / "apollo_small.safetensors"))
  f = sd["BN.0.1.weight"].shape[0]
  zero = {k: np.zeros(tuple(0 if n == f else n for n in v.shape), v.dtype) for k, v in sd.items()}
  path = str(tmp_path / "zero_width.pth")
  write_torch_zip(path, zero)
  return path


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_item4_crafted_tensor_views_are_refused(tmp_path, case):
  with pytest.raises(CheckpointFormatError, match=CRAFTED[case][1]):
    load_torch_generator(_crafted(tmp_path, case))


def test_item4_view_larger_than_storage_is_refused(tmp_path):
  # Used to segfault: as_strided read 40 KB out of a 64-byte buffer.
  with pytest.raises(CheckpointFormatError, match="reaches element 9999 of a storage with 16"):
    load_torch_generator(_crafted(tmp_path, "view_larger_than_storage"))


def test_item4_zero_width_feature_dim_is_refused(tmp_path, parity):
  with pytest.raises(CheckpointFormatError, match="positive"):
    load_torch_generator(_zero_width_feature_dim(tmp_path, parity))


def test_item4_corrupt_pickles_and_members_are_format_errors(tmp_path):
  import zipfile
  path = str(tmp_path / "cut.pth")
  write_crafted_zip(path, {"w": (("0", 16), 0, (4,), (1,))}, _STORAGE)
  with zipfile.ZipFile(path) as zf:
    members = {n: zf.read(n) for n in zf.namelist()}
  with zipfile.ZipFile(path, "w") as zf:  # the pickle cut in half
    for n, raw in members.items():
      zf.writestr(n, raw[:len(raw) // 2] if n.endswith("data.pkl") else raw)
  with pytest.raises(CheckpointFormatError, match="corrupt"):
    load_torch_generator(path)
  with zipfile.ZipFile(path, "w") as zf:  # a storage that is not whole float32 items
    for n, raw in members.items():
      zf.writestr(n, raw[:-1] if n.endswith("data/0") else raw)
  with pytest.raises(CheckpointFormatError):
    load_torch_generator(path)


def test_item4_crafted_zips_exit_2_in_restore_eval_and_convert(tmp_path, parity, song, capsys):
  paths = [_crafted(tmp_path, c) for c in sorted(CRAFTED)]
  paths.append(_zero_width_feature_dim(tmp_path, parity))
  data = tmp_path / "data"
  data.mkdir()
  audio.save(str(data / "a.wav"), music(1.5, seed=4), RATE)
  for path in paths:
    code, err = run(capsys, restore_main, song, "-o", tmp_path / "out.wav", "--checkpoint", path,
                    *QUIET)
    assert_one_line_error(code, err, path)
    code, err = run(capsys, interop.main, "convert", path, tmp_path / "conv")
    assert_one_line_error(code, err)
    code, err = run(capsys, eval_cli.main, "--checkpoint", path, "--data", data, "--out",
                    tmp_path / "ev", "--metrics", "si_snr", "--workers", "0", "--no-progress")
    assert_one_line_error(code, err, "cannot load checkpoint")
  assert not os.path.exists(tmp_path / "out.wav") and not os.path.exists(tmp_path / "conv")


def test_item4_view_larger_than_storage_does_not_crash_a_subprocess(tmp_path, song):
  # The segfault took the whole process down (exit 139): check the exit code itself.
  path = _crafted(tmp_path, "view_larger_than_storage")
  r = subprocess.run([sys.executable, "-m", "apollo_jax.restore", song, "-o",
                      str(tmp_path / "o.wav"), "--checkpoint", path, "--quiet"],
                     capture_output=True, text=True, timeout=300, cwd=REPO)
  assert r.returncode == 2, r.stderr
  assert len(r.stderr.strip().splitlines()) == 1, r.stderr
