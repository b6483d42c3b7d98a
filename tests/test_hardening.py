"""Regression tests for issue 15 ("Hardening"): one test (or more) per item, named after it."""

import os
import subprocess
import sys
from contextlib import nullcontext

import numpy as np
import pytest
from safetensors.numpy import load_file

import eval as eval_cli
from apollo_jax import audio
from apollo_jax.cli import interop as interop_cli
from apollo_jax.checkpoints import CheckpointFormatError, load_torch_generator, save_torch_generator
from apollo_jax.cli.restore import main as restore_main
from fakes import music
from tests.conftest import TINY
from torch_zip import write_crafted_zip, write_malicious_zip, write_torch_zip

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = TINY.sample_rate
QUIET = ["--chunk-seconds", "0.5", "--overlap-seconds", "0.1", "--quiet"]


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
    code, err = run(capsys, interop_cli.main, "convert", path, tmp_path / "conv")
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


# ---------------------------------------------------------------------------------------
# Items 7 and 8: truncated WAVs, absurd sample rates


def _wav(path, seconds=1.0, rate=RATE, channels=2, subtype="PCM_16"):
  import soundfile as sf
  x = music(seconds, seed=5)[:1].repeat(channels, 0)[:, :int(seconds * rate)]
  sf.write(str(path), x.T, rate, subtype=subtype)
  return str(path)


def _truncated(tmp_path, name="third.wav"):
  """A WAV cut to a third of its length (the header still announces all of it)."""
  full = _wav(tmp_path / "full.wav", 1.2)
  raw = open(full, "rb").read()
  path = tmp_path / name
  path.write_bytes(raw[:len(raw) // 3])
  return str(path)


def _claims_2gb(tmp_path, name="huge.wav"):
  """A complete short WAV whose RIFF and data sizes claim ~2 GB."""
  import struct
  raw = bytearray(open(_wav(tmp_path / "short.wav", 0.6), "rb").read())
  i = raw.find(b"data")
  raw[i + 4:i + 8] = struct.pack("<I", 0x7FFFFFF0)
  raw[4:8] = struct.pack("<I", 0x7FFFFFF0 + i)
  path = tmp_path / name
  path.write_bytes(bytes(raw))
  return str(path)


@pytest.mark.parametrize("make", [_truncated, _claims_2gb], ids=["cut_to_a_third", "claims_2GB"])
def test_item7_truncated_wav_is_refused_by_load_reader_and_info(tmp_path, make):
  path = make(tmp_path)
  for call in (lambda: audio.info(path), lambda: audio.load(path),
               lambda: audio.load(path, 48000, start=10, frames=100),
               lambda: list(audio.Reader(path, RATE).blocks())):
    with pytest.raises(audio.AudioError, match="truncated"):
      call()


def test_item7_complete_files_still_read(tmp_path):
  import soundfile as sf
  for name, fmt, subtype in (("a.wav", "WAV", "FLOAT"), ("b.aiff", "AIFF", "PCM_24"),
                             ("c.flac", "FLAC", "PCM_16"), ("d.wav", "RF64", "PCM_16")):
    path = str(tmp_path / name)
    sf.write(path, music(0.3, seed=1).T, RATE, subtype=subtype, format=fmt)
    assert audio.info(path)[2] == int(0.3 * RATE)
    assert audio.load(path)[0].shape == (2, int(0.3 * RATE))


def test_item7_reader_refuses_data_that_ends_before_the_header_count(tmp_path, monkeypatch):
  # If libsndfile's own count ever disagrees with the data it delivers, reading still fails.
  path = _wav(tmp_path / "a.wav", 0.5)
  reader = audio.Reader(path)
  reader._header_frames += 1000
  with pytest.raises(audio.AudioError, match="truncated"):
    list(reader.blocks())


def test_item7_truncated_wav_exits_2_in_restore_and_stream(tmp_path, ckpt, capsys):
  for make in (_truncated, _claims_2gb):
    path = make(tmp_path)
    out = tmp_path / "out.wav"
    code, err = run(capsys, restore_main, path, "-o", out, "--checkpoint", ckpt, *QUIET)
    assert_one_line_error(code, err, "truncated")
    code, err = run(capsys, restore_main, path, "-o", out, "--checkpoint", ckpt, "--stream")
    assert_one_line_error(code, err, "truncated")
    assert not out.exists()


def test_item7_truncated_stem_is_skipped_by_the_data_scan(tmp_path):
  from apollo_jax.data import scan
  for t in range(2):
    for s in ("bass", "drums"):
      os.makedirs(tmp_path / f"song{t}", exist_ok=True)
      _wav(tmp_path / f"song{t}" / f"{s}.wav", 1.0)
  cut = tmp_path / "song0" / "drums.wav"
  cut.write_bytes(cut.read_bytes()[:len(cut.read_bytes()) // 3])
  index = scan(str(tmp_path), "stems", 0.2)
  assert "truncated" in index.skipped[str(cut)]
  assert all(str(cut) != f["path"] for t in index.tracks for fs in t["stems"].values() for f in fs)


def _one_hz_six_channels(tmp_path):
  """The issue's file: a 76 KB, 6-channel WAV whose header says 1 Hz."""
  import struct
  path = _wav(tmp_path / "one_hz.wav", 0.15, channels=6)
  raw = bytearray(open(path, "rb").read())
  raw[24:28] = struct.pack("<I", 1)  # fmt sample rate
  raw[28:32] = struct.pack("<I", 1 * 6 * 2)  # byte rate
  open(path, "wb").write(bytes(raw))
  return path


def test_item8_sample_rates_outside_1k_768k_are_refused(tmp_path, ckpt, capsys):
  path = _one_hz_six_channels(tmp_path)
  for call in (lambda: audio.info(path), lambda: audio.Reader(path, RATE),
               lambda: audio.load(path, RATE)):
    with pytest.raises(audio.AudioError, match="sample rate 1 Hz is outside"):
      call()
  code, err = run(capsys, restore_main, path, "-o", tmp_path / "o.wav", "--checkpoint", ckpt,
                  *QUIET)
  assert_one_line_error(code, err, "sample rate")
  high = _wav(tmp_path / "high.wav", 0.01, rate=800_000)
  with pytest.raises(audio.AudioError, match="800000 Hz is outside"):
    audio.load(high)
  assert audio.load(_wav(tmp_path / "ok.wav", 0.2, rate=1000), RATE)[0].shape[1] == int(0.2 * RATE)


def test_item8_every_resampled_block_is_bounded(tmp_path):
  path = _wav(tmp_path / "low.wav", 3.0, rate=1000, channels=6)
  with audio.Reader(path, RATE) as r:
    sizes = [b.size for b in r.blocks(1 << 20)]
  assert max(sizes) <= audio.MAX_BLOCK_SAMPLES
  assert sum(sizes) == 6 * int(3.0 * RATE)
  x = np.random.default_rng(0).standard_normal((3, 100_000)).astype(np.float32)
  whole = audio.resample(x, 1000, 44100)
  pieces = list(audio.resample_stream([x], 1000, 44100, 3))
  assert max(p.size for p in pieces) <= audio.MAX_BLOCK_SAMPLES
  np.testing.assert_array_equal(np.concatenate(pieces, axis=1), whole)


# ---------------------------------------------------------------------------------------
# Items 6, 9, 10, 11, 15, 16: the restore and streaming command lines


def test_item6_stream_with_unsafe_pickle_is_a_one_line_error(tmp_path, song, capsys):
  marker = tmp_path / "pwned"
  evil = str(tmp_path / "evil.pth")
  write_malicious_zip(evil, f"touch {marker}")
  code, err = run(capsys, restore_main, song, "-o", tmp_path / "o.wav", "--checkpoint", evil,
                  "--stream")
  assert_one_line_error(code, err, "os.system", evil)
  code2, err2 = run(capsys, restore_main, song, "-o", tmp_path / "o.wav", "--checkpoint", evil,
                    *QUIET)
  assert code2 == 2 and err2 == err  # the same line as without --stream
  assert not marker.exists() and not (tmp_path / "o.wav").exists()
  for bad in (_crafted(tmp_path, "view_larger_than_storage"), str(tmp_path / "missing.bin")):
    code, err = run(capsys, restore_main, song, "-o", tmp_path / "o.wav", "--checkpoint", bad,
                    "--stream")
    assert_one_line_error(code, err, bad)


def test_item9_stream_overwrite_never_overwrites_the_input(tmp_path, ckpt, capsys):
  path = _wav(tmp_path / "in.wav", 0.3)
  before = open(path, "rb").read()
  for extra in ([], ["--overwrite"]):
    code, err = run(capsys, restore_main, path, "-o", path, "--checkpoint", ckpt, "--stream",
                    *extra)
    assert_one_line_error(code, err, "input")
    link = tmp_path / "link.wav"  # the same file under another name
    if not link.exists():
      os.link(path, link)
    code, err = run(capsys, restore_main, path, "-o", link, "--checkpoint", ckpt, "--stream",
                    *extra)
    assert_one_line_error(code, err, "input")
  with pytest.raises(SystemExit) as e:  # python -m apollo_jax.streaming as well
    from apollo_jax.cli import stream
    stream.main([path, path, "--checkpoint", ckpt])
  assert e.value.code == 2
  assert open(path, "rb").read() == before


def _signal_restore(tmp_path, ckpt, signum):
  """Starts a restore of a long file into new folders, signals it mid-write; returns it."""
  import signal
  import time
  import soundfile as sf
  src = str(tmp_path / "long.wav")
  noise = 0.1 * np.random.default_rng(0).standard_normal((30 * RATE, 2))
  sf.write(src, noise.astype(np.float32), RATE)
  out = tmp_path / "new" / "deeper" / "out.wav"
  proc = subprocess.Popen(
      # A shell's background job (`cmd &`) starts with SIGINT ignored and Python keeps it
      # so; the child sets the handler a terminal's Ctrl-C finds, then runs the command.
      [sys.executable, "-c", "import runpy, signal, sys; "
       "signal.signal(signal.SIGINT, signal.default_int_handler); sys.argv[0] = 'restore'; "
       "runpy.run_module('apollo_jax.restore', run_name='__main__')",
       src, "-o", str(out), "--checkpoint", ckpt,
       "--chunk-seconds", "0.5", "--overlap-seconds", "0.1", "--quiet"],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:  # wait until the temp file exists
    if (tmp_path / "new" / "deeper").is_dir() and os.listdir(tmp_path / "new" / "deeper"):
      break
    time.sleep(0.05)
  assert proc.poll() is None, proc.communicate()
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=120)
  return proc.returncode, err, tmp_path / "new"


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_item10_signal_during_restore_cleans_up(tmp_path, ckpt, signame):
  import signal
  code, err, created = _signal_restore(tmp_path, ckpt, getattr(signal, signame))
  assert code == 130, err
  assert not created.exists(), list(os.walk(created))  # no .tmp-*.wav, no created folders
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: interrupted"), err
  assert "Traceback" not in err


def test_item11_raw_pcm_nan_is_an_error_not_propagated(params):
  import io
  from apollo_jax.inference import streaming
  x = np.zeros((2, 5 * 441), np.float32)
  x[1, 3 * 441 + 7] = np.nan
  out = io.BytesIO()
  with pytest.raises(ValueError, match=f"sample {3 * 441 + 7} is NaN or Inf"):
    streaming.stream_stdio(TINY, params, 2, io.BytesIO(x.T.astype("<f4").tobytes()), out)
  assert np.isfinite(np.frombuffer(out.getvalue(), "<f4")).all()


def test_item11_raw_pcm_nan_exits_2_from_the_command_line(tmp_path, ckpt):
  x = np.zeros((4 * 441, 2), "<f4")
  x[100, 0] = np.inf
  r = subprocess.run([sys.executable, "-m", "apollo_jax.restore", "-", "-o", "-", "--stream",
                      "--checkpoint", ckpt], input=x.tobytes(), capture_output=True, cwd=REPO,
                     timeout=300)
  assert r.returncode == 2, r.stderr
  assert b"NaN or Inf" in r.stderr.strip().splitlines()[-1]
  assert b"Traceback" not in r.stderr


def test_item15_restoring_a_folder_into_itself_says_why(tmp_path, ckpt, capsys):
  folder = tmp_path / "music"
  folder.mkdir()
  _wav(folder / "a.wav", 0.3)
  os.makedirs(folder / "sub")
  _wav(folder / "sub" / "b.wav", 0.3)
  before = listing(folder)
  for out in (folder, str(folder) + "/", tmp_path / "music" / "."):
    for extra in ([], ["--overwrite"]):
      code, err = run(capsys, restore_main, folder, "-o", out, "--checkpoint", ckpt, *QUIET, *extra)
      assert_one_line_error(code, err, "into itself")
  assert listing(folder) == before
  # Inputs whose outputs do not collide (b.flac -> b.wav) are still restored in place; see
  # test_restore.py::test_output_equal_to_input_in_a_batch_is_skipped.


def listing(folder):
  return sorted(os.path.relpath(os.path.join(r, f), folder)
                for r, _, files in os.walk(folder) for f in files)


def test_item16_restored_files_get_the_umask_mode(tmp_path, ckpt, capsys, params):
  src = _wav(tmp_path / "a.wav", 0.3)
  old = os.umask(0o022)
  try:
    code, _ = run(capsys, restore_main, src, "-o", tmp_path / "r.wav", "--checkpoint", ckpt, *QUIET)
    assert code == 0
    assert os.stat(tmp_path / "r.wav").st_mode & 0o777 == 0o644
    os.umask(0o027)
    audio.save(str(tmp_path / "s.flac"), music(0.1, seed=1), RATE)
    assert os.stat(tmp_path / "s.flac").st_mode & 0o777 == 0o640
    save_torch_generator(TINY, params, str(tmp_path / "g.safetensors"))
    assert os.stat(tmp_path / "g.safetensors").st_mode & 0o777 == 0o640
    from apollo_jax.checkpoints import save_generator
    save_generator(str(tmp_path / "orbax"), TINY, params)
    assert os.stat(tmp_path / "orbax").st_mode & 0o777 == 0o750
  finally:
    os.umask(old)


# ---------------------------------------------------------------------------------------
# Item 14: eval.py


def test_item14_eval_out_naming_a_file_and_unknown_bitrates_are_refused(tmp_path, capsys):
  data = tmp_path / "data"
  data.mkdir()
  audio.save(str(data / "a.wav"), music(1.5, seed=4), RATE)
  (tmp_path / "taken").write_text("x")
  common = ["--data", data, "--metrics", "si_snr", "--workers", "0", "--no-progress"]
  code, err = run(capsys, eval_cli.main, "--out", tmp_path / "taken", *common)
  assert_one_line_error(code, err, "existing file")
  for bitrates, codec in (("9999", "mp3"), ("32,0", "mp3"), ("4", "opus"), ("600", "aac")):
    code, err = run(capsys, eval_cli.main, "--out", tmp_path / "ev", "--bitrates", bitrates,
                    "--codec", codec, *common)
    assert_one_line_error(code, err, "kbit/s")
  assert not (tmp_path / "ev").exists()


# ---------------------------------------------------------------------------------------
# Item 5: damaged orbax checkpoints in restore


def _manager_run(tmp_path, params):
  """An orbax CheckpointManager folder with steps 1 and 2 of generator params (+ offset)."""
  import jax
  import json
  import orbax.checkpoint as ocp
  root = str(tmp_path / "run")
  with ocp.CheckpointManager(root) as mgr:
    for step in (1, 2):
      p = jax.tree.map(lambda a: np.asarray(a) + step, params)
      mgr.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave({"generator": {"params": p}}),
          config=ocp.args.JsonSave({"model": json.loads(TINY.to_json())})))
    mgr.wait_until_finished()
  return root


def _truncate_files(folder):
  for r, _, files in os.walk(folder):
    for f in files:
      path = os.path.join(r, f)
      size = os.path.getsize(path)
      if size:
        with open(path, "r+b") as fh:
          fh.truncate(size // 2)


def _assert_params_equal(a, b):
  import jax
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_item5_truncated_newest_step_falls_back_to_an_older_one(tmp_path, params, song, capsys):
  import jax
  from apollo_jax.checkpoints import load_generator
  root = _manager_run(tmp_path, params)
  _truncate_files(os.path.join(root, "2", "state"))
  cfg, got = load_generator(root)
  assert cfg == TINY
  _assert_params_equal(got, jax.tree.map(lambda a: np.asarray(a) + 1, params))
  code, _ = run(capsys, restore_main, song, "-o", tmp_path / "o.wav", "--checkpoint", root, *QUIET)
  assert code == 0


def test_item5_corrupt_orbax_folder_is_a_one_line_error(tmp_path, params, song, capsys):
  from apollo_jax.checkpoints import load_generator
  root = _manager_run(tmp_path, params)
  for step in ("1", "2"):
    _truncate_files(os.path.join(root, step, "state"))
  with pytest.raises(CheckpointFormatError, match="no readable step"):
    load_generator(root)
  one = os.path.join(root, "1")
  with pytest.raises(CheckpointFormatError, match="cannot read orbax checkpoint"):
    load_generator(one)
  for ckpt_path in (root, one):
    code, err = run(capsys, restore_main, song, "-o", tmp_path / "o.wav", "--checkpoint",
                    ckpt_path, *QUIET)
    assert_one_line_error(code, err, ckpt_path)
    code, err = run(capsys, restore_main, song, "-o", tmp_path / "o.wav", "--checkpoint",
                    ckpt_path, "--stream")
    assert_one_line_error(code, err, ckpt_path)


# ---------------------------------------------------------------------------------------
# Item 3: every training config field is checked at start-up, by name


BAD_FIELDS = [
    ("log_every", 0), ("checkpoint_every", 0), ("global_batch_size", 0),
    ("global_batch_size", -2), ("num_steps", 0), ("keep_checkpoints", 0), ("val_every", -1),
    ("early_stop_patience", 0), ("val_audio_items", -1),
    ("data.segment_seconds", -1.0), ("data.segment_seconds", 0.0), ("data.val_seconds", -0.5),
    ("data.demo_seconds", 0.0), ("data.sample_rate", 1), ("data.channels", 3),
    ("data.max_stems", 0), ("data.p_mixture", 1.5), ("data.max_crop_tries", 0),
    ("data.val_items", 0), ("data.num_workers", -1), ("data.read_buffer", 0),
    ("data.mp3_quality", 10), ("data.gain_db", (10.0, -10.0)), ("data.bitrates", (32, 9999)),
    ("data.bitrates", ()), ("data.codecs", ("wma",)), ("data.layout", "musdb18"),
    ("data.activity_min_fraction", -0.1), ("data.demo_source", "fluid"),
    ("data.p_band_limit", 1.5), ("data.band_limit_hz", (9000.0, 8000.0)),
    ("data.band_limit_hz", (8000.0, 30000.0)), ("train.log_mag_weight", -1.0),
    ("model.feature_dim", 0), ("model.num_layers", -1), ("model.win_ms", -20),
    ("train.g_lr", -1e-3), ("train.d_lr", 0.0), ("train.clip_norm", 0.0),
    ("train.g_betas", (0.9, 1.5)), ("train.windows", (0, 64)), ("train.freeze_blocks", 99),
    ("train.steps_per_epoch", 0), ("train.channels", 0), ("train.d_hidden", 0),
]


@pytest.mark.parametrize("field,value", BAD_FIELDS, ids=[f"{f}={v}" for f, v in BAD_FIELDS])
def test_item3_bad_config_fields_are_named_at_start_up(field, value):
  sys.path.insert(0, REPO)
  from configs import apollo
  from apollo_jax.training.validate import ConfigError, check_config
  config = apollo.get_config("demo")
  *parents, name = field.split(".")
  node = config
  for p in parents:
    node = node[p]
  with node.unlocked() if hasattr(node, "unlocked") else nullcontext():
    node[name] = value
  with pytest.raises(ConfigError) as e:
    check_config(config)
  message = str(e.value)
  assert message.startswith("config." + ".".join(parents)) and name in message, message
  assert "\n" not in message


def test_item3_shipped_configs_pass_the_checks():
  sys.path.insert(0, REPO)
  from configs import apollo
  from apollo_jax.training.validate import check_config
  for variant in ("paper", "demo", "demo_long", "causal", "finetune"):
    check_config(apollo.get_config(variant))


SHARED = [("model.sample_rate", 48000, "data.sample_rate"), ("data.sample_rate", 48000, "model.sample_rate"),
          ("data.channels", 1, "train.channels"), ("train.channels", 1, "data.channels")]


@pytest.mark.parametrize("field,value,other", SHARED, ids=[f"{f}={v}" for f, v, _ in SHARED])
def test_issue12_model_data_and_train_must_agree(field, value, other):
  # Issue 12 item 2: a field two parts of the config hold is derived in configs/apollo.py;
  # overriding one side only fails at start-up, naming both fields, in one line.
  sys.path.insert(0, REPO)
  from configs import apollo
  from apollo_jax.training.validate import ConfigError, check_config
  config = apollo.get_config("demo")
  set_field = lambda c, dotted, v: c[dotted.split(".")[0]].__setitem__(dotted.split(".")[1], v)
  set_field(config, field, value)
  with pytest.raises(ConfigError) as e:
    check_config(config)
  message = str(e.value)
  assert f"config.{field}={value}" in message and f"config.{other}=" in message, message
  assert "disagree" in message and "\n" not in message
  set_field(config, other, value)  # both set: training starts
  check_config(config)


def test_issue12_compute_dtype_has_one_owner():
  # The model config owns the matmul dtype (both networks use it); a train config written
  # before the move says where the field went instead of "unknown field".
  from apollo_jax.training.config import TrainConfig
  assert "compute_dtype" not in TrainConfig().to_dict()
  with pytest.raises(ValueError, match="config.model.compute_dtype"):
    TrainConfig.from_dict({"compute_dtype": "bfloat16"})


def test_item3_train_py_refuses_a_bad_field_in_one_line_before_compiling(tmp_path):
  import time
  start = time.time()
  r = subprocess.run([sys.executable, "train.py", "--config", "configs/apollo.py:demo",
                      "--workdir", str(tmp_path / "w"), "--config.log_every=0"],
                     cwd=REPO, capture_output=True, text=True, timeout=300,
                     env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert r.returncode == 2, r.stderr[-2000:]
  lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
  assert lines == ["error: config.log_every must be an integer >= 1, got 0"], r.stderr[-2000:]
  assert "Traceback" not in r.stderr
  assert not os.path.exists(tmp_path / "w" / "checkpoints")
  assert time.time() - start < 120  # no compilation, no demo corpus


# ---------------------------------------------------------------------------------------
# Items 12 and 13: the data scan and mixing


def _stems(root, tracks=2, names=("bass", "drums"), scale=0.3):
  for t in range(tracks):
    os.makedirs(os.path.join(root, f"song{t}"), exist_ok=True)
    for s in names:
      x = music(1.0, seed=10 * t + len(s))
      audio.save(os.path.join(root, f"song{t}", f"{s}.wav"), x * scale, RATE)
  return str(root)


def test_item12_unreadable_track_folder_is_skipped_not_a_crash(tmp_path, monkeypatch):
  from apollo_jax.data import DataError, scan
  root = _stems(tmp_path / "stems")
  _stems(tmp_path / "moises" / "t0", names=("vocals",))  # moisesdb: <track>/<stem>/<file>
  blocked = {os.path.join(root, "song1"), str(tmp_path / "moises" / "t0" / "song1")}
  real_listdir = os.listdir

  def listdir(path="."):  # tests run as root, where chmod 000 blocks nothing
    if str(path) in blocked:
      raise PermissionError(13, "Permission denied", str(path))
    return real_listdir(path)

  monkeypatch.setattr(os, "listdir", listdir)
  index = scan(root, "stems", 0.2)
  assert [t["name"] for t in index.tracks] == ["song0"]
  assert index.skipped[os.path.join(root, "song1")].startswith("unreadable folder")
  index = scan(str(tmp_path / "moises"), "moisesdb", 0.2)
  assert [t["name"] for t in index.tracks] == ["t0"]
  assert "unreadable folder" in index.skipped[str(tmp_path / "moises" / "t0" / "song1")]
  blocked.add(root)  # the root itself: a clear DataError naming it
  with pytest.raises(DataError, match=f"{root}: cannot list the folder"):
    scan(root, "stems", 0.2)


def test_item12_unreadable_folder_in_paired_layout_is_skipped(tmp_path, monkeypatch):
  from apollo_jax.data import scan
  for side in ("clean", "degraded"):
    for sub in ("a", "b"):
      os.makedirs(tmp_path / side / sub)
      audio.save(str(tmp_path / side / sub / "x.wav"), music(1.0, seed=1) * 0.3, RATE)
  real_scandir = os.scandir

  def scandir(path="."):  # os.walk lists folders with scandir
    if str(path) == str(tmp_path / "clean" / "b"):
      raise PermissionError(13, "Permission denied", str(path))
    return real_scandir(path)

  monkeypatch.setattr(os, "scandir", scandir)
  index = scan(str(tmp_path), "paired", 0.2)
  assert [t["name"] for t in index.tracks] == [os.path.join("a", "x.wav")]
  assert "unreadable folder" in index.skipped[str(tmp_path / "clean" / "b")]


def test_item13_stems_near_float32_max_are_skipped_and_counted(tmp_path, caplog):
  import logging
  import soundfile as sf
  from apollo_jax.data import default_data_config, mixing, pipeline
  root = _stems(tmp_path)
  huge = tmp_path / "song1" / "drums.wav"
  sf.write(str(huge), np.full((RATE, 2), 3.0e38, np.float32), RATE, subtype="FLOAT")
  cfg = default_data_config()
  cfg.train_dirs = [root]
  cfg.segment_seconds = 0.5
  cfg.max_crop_tries = 2
  cfg.p_mixture = 0.0
  index = pipeline.train_index(cfg)
  transform = pipeline.MixAndDegrade(index.tracks, mixing.MixSpec.from_config(cfg))
  with caplog.at_level(logging.WARNING):
    for i in range(16):  # draws that hit the huge stem used to kill the iterator
      item = transform.random_map(i % 2, np.random.default_rng(i))
      assert np.isfinite(item["target"]).all() and np.isfinite(item["degraded"]).all()
      assert np.max(np.abs(item["target"])) <= 1.0
  assert transform.bad == {str(huge)}
  assert sum("far outside audio range" in r.getMessage() for r in caplog.records) == 1


def test_item4_many_views_of_one_storage_cannot_exhaust_memory(tmp_path):
  # Each view alone is allowed (16M elements), 200 of them would need 12.8 GB.
  view = (("0", 16), 0, (1 << 24,), (0,))
  path = str(tmp_path / "many.pth")
  write_crafted_zip(path, {f"w{i}": view for i in range(200)}, _STORAGE)
  with pytest.raises(CheckpointFormatError, match="far more memory"):
    load_torch_generator(path)


# ---------------------------------------------------------------------------------------
# README's Errors section: every row names a test, and every named test exists


def test_readme_errors_section_names_only_existing_tests():
  import re
  text = open(os.path.join(REPO, "README.md")).read()
  section = text.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
  refs = re.findall(r"`([\w.]+)::(test_\w+)`", section)
  assert len(refs) >= 30, refs
  for module, name in refs:
    path = os.path.join(REPO, "tests", "test_hardening.py" if module == "hardening" else module)
    assert re.search(rf"^def {name}\(", open(path).read(), re.M), f"{module}::{name}"
  rows = [l for l in section.splitlines() if l.startswith("| ") and not l.startswith(("| input", "|---"))]
  for row in rows:  # every table row cites at least one test
    assert "::test_" in row, row
