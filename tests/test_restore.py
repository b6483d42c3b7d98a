"""Chunked restoration (apollo_jax.inference.chunked) and the restore command line (apollo_jax.cli.restore)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from safetensors.numpy import load_file, save_file

from apollo_jax import audio
from apollo_jax.data import codecs
from apollo_jax.checkpoints import save_generator
from apollo_jax.inference.chunked import ChunkedRestorer, _OverlapAdd, restore_array
from apollo_jax.cli.restore import main
from fakes import music
from tests.conftest import TINY
from torch_zip import write_malicious_zip

RATE = TINY.sample_rate
# Small chunks so that short test files span several of them; one compile for all CLI
# tests. The CLI runs 2 chunks per call, the library tests 1: comparing them checks that
# batching changes nothing.
CHUNK = ["--chunk-seconds", "0.5", "--overlap-seconds", "0.1", "--batch-chunks", "2", "--quiet"]


def run(capsys, *argv):
  """Runs the CLI in-process: ``(exit code, stdout, stderr lines)``."""
  code = main([str(a) for a in argv])
  out, err = capsys.readouterr()
  return code, out, err.strip().splitlines()


def assert_one_line_error(code, err, *words):
  assert code == 2, err
  assert len(err) == 1 and err[0].startswith("error:"), err
  for w in words:
    assert w in err[0], err


def listing(folder):
  return sorted(os.path.relpath(os.path.join(r, f), folder)
                for r, _, files in os.walk(folder) for f in files)


# ---------------------------------------------------------------------------------------
# Chunked overlap-add


def test_crossfade_passes_agreeing_chunks_unchanged():
  ola = _OverlapAdd(chunk=10)
  ones = np.ones((2, 10), np.float32)
  parts = [ola.add(s, ones) for s in (0, 6, 12, 13, 14)]
  parts.append(ola.finish(24))
  out = np.concatenate([p for p in parts if p is not None], axis=1)
  np.testing.assert_allclose(out, np.ones((2, 24)), atol=1e-6)


@pytest.mark.slow
def test_chunked_matches_whole_away_from_the_end(params):
  x = music(3.0, seed=2)[:, :3 * RATE - 1234]  # not a whole number of hops
  whole = restore_array(params, TINY, x, chunk_seconds=None)
  # Margins of 11 hops are dropped at chunk edges: more than the receptive field of one
  # block (3 TCN units x 3 frames + the STFT frame), so chunking changes nothing there.
  chunked = restore_array(params, TINY, x, chunk_seconds=0.5, overlap_seconds=0.45)
  assert chunked.shape == x.shape
  tail = RATE // 5
  np.testing.assert_allclose(chunked[:, :-tail], whole[:, :-tail], atol=1e-5)
  # The last chunk mirrors the < 1 hop past the end; that only nudges the last frames.
  snr = 10 * np.log10(np.sum(whole ** 2) / np.sum((whole - chunked) ** 2))
  assert snr > 20, snr
  for overlap in (0.0, 0.1):  # short overlaps work too (less exact at chunk edges)
    y = restore_array(params, TINY, x, chunk_seconds=0.5, overlap_seconds=overlap)
    assert y.shape == x.shape and np.isfinite(y).all()


def test_input_shorter_than_a_chunk_is_restored_whole(params):
  x = music(0.3)
  np.testing.assert_array_equal(
      restore_array(params, TINY, x, chunk_seconds=0.5, overlap_seconds=0.1),
      restore_array(params, TINY, x, chunk_seconds=None))


def test_restore_streams_with_bounded_buffering(params):
  restorer = ChunkedRestorer(TINY, params, chunk_seconds=0.5, overlap_seconds=0.1)
  x = music(4.0, channels=1)
  consumed = []

  def blocks():
    for i in range(0, x.shape[1], 4410):
      consumed.append(i)
      yield x[:, i:i + 4410]

  stream = restorer.restore(blocks())
  first = next(stream)
  # Output starts after about one chunk of input, long before the end of the input.
  assert first.shape[1] > 0 and consumed[-1] < RATE
  rest = np.concatenate([first, *stream], axis=1)
  assert rest.shape == x.shape
  assert restorer.num_chunks(x.shape[1]) == 10


def test_too_short_or_bad_settings_are_clear(params):
  with pytest.raises(audio.AudioError, match="shorter than one STFT window"):
    restore_array(params, TINY, np.zeros((1, 500), np.float32))
  with pytest.raises(ValueError, match="overlap_seconds"):
    ChunkedRestorer(TINY, params, chunk_seconds=0.5, overlap_seconds=0.5)


# ---------------------------------------------------------------------------------------
# The command line: formats, layout, options


def write_formats(folder):
  """Short test files in several formats; returns {name: (channels, samples, rate)}."""
  os.makedirs(folder / "sub", exist_ok=True)
  x = music(0.8, seed=3)
  made = {}
  sf.write(folder / "stereo.wav", x.T, RATE, subtype="PCM_16")
  made["stereo"] = (2, x.shape[1], RATE)
  mono = audio.resample(x[:1], RATE, 22050)
  sf.write(folder / "sub" / "mono22k.flac", mono.T, 22050)
  made["sub/mono22k"] = (1, mono.shape[1], 22050)
  three = np.concatenate([x, x[:1] * 0.5])
  sf.write(folder / "sub" / "three.wav", three.T, RATE, subtype="FLOAT")
  made["sub/three"] = (3, x.shape[1], RATE)
  for codec in ("mp3", "aac", "opus", "vorbis"):
    path = folder / f"coded_{codec}{codecs.extension(codec)}"
    path.write_bytes(codecs.encode(x, RATE, codec, bitrate=64))
    decoded, rate = audio.load(str(path))  # what the CLI reads (decoders differ in padding)
    made[path.stem] = (2, decoded.shape[1], rate)
  return made


def test_batch_restores_every_format_mirroring_the_tree(tmp_path, ckpt, capsys):
  made = write_formats(tmp_path / "in")
  (tmp_path / "in" / "notes.txt").write_text("not audio, not picked up")
  code, out, err = run(capsys, tmp_path / "in", "-o", tmp_path / "out", "--checkpoint", ckpt,
                       *CHUNK)
  assert code == 0, err
  assert f"restored {len(made)} files" in out and "real-time factor" in out
  assert listing(tmp_path / "out") == sorted(f"{n}.wav" for n in made)
  for name, (channels, samples, rate) in made.items():
    y, r = sf.read(tmp_path / "out" / f"{name}.wav", always_2d=True)
    assert r == RATE and y.shape[1] == channels
    assert abs(y.shape[0] - samples * RATE / rate) <= 1, name
    assert np.isfinite(y).all() and np.abs(y).max() > 0
    assert sf.info(str(tmp_path / "out" / f"{name}.wav")).subtype == "FLOAT"


def test_single_file_matches_the_library(tmp_path, ckpt, params, capsys):
  x = music(1.3, seed=4)
  sf.write(tmp_path / "a.wav", x.T, RATE, subtype="FLOAT")
  code, out, err = run(capsys, tmp_path / "a.wav", "-o", tmp_path / "a_out.wav",
                       "--checkpoint", ckpt, *CHUNK)
  assert code == 0, err
  assert out.startswith("restored 1 file,")
  y, r = sf.read(tmp_path / "a_out.wav", always_2d=True, dtype="float32")
  want = restore_array(params, TINY, x, chunk_seconds=0.5, overlap_seconds=0.1)
  np.testing.assert_allclose(y.T, want, atol=1e-6)


def test_keep_rate_subtype_flac_and_output_folder(tmp_path, ckpt, capsys):
  x = audio.resample(music(0.7, seed=5), RATE, 48000)
  sf.write(tmp_path / "hi.wav", x.T, 48000)
  code, _, err = run(capsys, tmp_path / "hi.wav", "-o", tmp_path / "hi.flac", "--checkpoint",
                     ckpt, "--keep-rate", "--subtype", "PCM_16", *CHUNK)
  assert code == 0, err
  info = sf.info(str(tmp_path / "hi.flac"))
  assert (info.samplerate, info.frames, info.channels, info.subtype) == (48000, x.shape[1], 2, "PCM_16")
  # An existing folder as the output of one file: <folder>/<name>.wav
  (tmp_path / "dest").mkdir()
  code, _, err = run(capsys, tmp_path / "hi.wav", "-o", tmp_path / "dest", "--checkpoint", ckpt,
                     *CHUNK)
  assert code == 0, err
  assert listing(tmp_path / "dest") == ["hi.wav"]
  assert sf.info(str(tmp_path / "dest" / "hi.wav")).samplerate == RATE


def test_existing_output_needs_overwrite(tmp_path, ckpt, capsys):
  sf.write(tmp_path / "a.wav", music(0.3).T, RATE)
  (tmp_path / "o.wav").write_bytes(b"old")
  code, _, err = run(capsys, tmp_path / "a.wav", "-o", tmp_path / "o.wav", "--checkpoint", ckpt,
                     *CHUNK)
  assert_one_line_error(code, err, "--overwrite")
  assert (tmp_path / "o.wav").read_bytes() == b"old"
  code, _, err = run(capsys, tmp_path / "a.wav", "-o", tmp_path / "o.wav", "--checkpoint", ckpt,
                     "--overwrite", *CHUNK)
  assert code == 0, err
  assert sf.info(str(tmp_path / "o.wav")).frames == int(0.3 * RATE)


def test_orbax_checkpoint_folder_gives_the_same_output(tmp_path, ckpt, params, capsys):
  save_generator(str(tmp_path / "orbax"), TINY, params)
  sf.write(tmp_path / "a.wav", music(0.3).T, RATE, subtype="FLOAT")
  outs = []
  for i, checkpoint in enumerate([ckpt, tmp_path / "orbax"]):
    code, _, err = run(capsys, tmp_path / "a.wav", "-o", tmp_path / f"o{i}.wav", "--checkpoint",
                       checkpoint, *CHUNK)
    assert code == 0, err
    outs.append(sf.read(tmp_path / f"o{i}.wav", dtype="float32")[0])
  np.testing.assert_array_equal(outs[0], outs[1])


def test_no_chunk_full_file_matches_published_output(tmp_path, parity, capsys):
  x = np.load(parity / "input.npy")[0]
  want = np.load(parity / "output.npy")[0]
  sf.write(tmp_path / "input.wav", x.T, RATE, subtype="FLOAT")
  code, _, err = run(capsys, tmp_path / "input.wav", "-o", tmp_path / "output.wav",
                     "--checkpoint", parity / "apollo_small.safetensors", "--no-chunk", "--quiet")
  assert code == 0, err
  y, _ = sf.read(tmp_path / "output.wav", always_2d=True, dtype="float32")
  assert y.T.shape == want.shape
  assert np.abs(y.T - want).max() <= 1e-4


@pytest.mark.slow  # a fresh process: imports JAX and compiles again
def test_module_entry_point(tmp_path, ckpt):
  sf.write(tmp_path / "a.wav", music(0.4).T, RATE)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  r = subprocess.run([sys.executable, "-m", "apollo_jax.restore", str(tmp_path / "a.wav"), "-o",
                      str(tmp_path / "b.wav"), "--checkpoint", ckpt, "--device", "cpu"],
                     capture_output=True, text=True, env={**os.environ, "PYTHONPATH": root})
  assert r.returncode == 0, r.stderr
  assert "restored 1 file" in r.stdout
  assert sf.info(str(tmp_path / "b.wav")).frames == int(0.4 * RATE)


# ---------------------------------------------------------------------------------------
# Errors: exit code 2, one line, nothing written


@pytest.fixture
def bad_inputs(tmp_path):
  """Files that must each be refused, sorted."""
  d = tmp_path / "bad"
  d.mkdir()
  x = music(0.5)
  sf.write(d / "empty.wav", np.zeros((0, 2), np.float32), RATE)
  (d / "garbage.mp3").write_bytes(np.random.default_rng(0).bytes(4000))
  (d / "garbage.wav").write_bytes(b"RIFF" + np.random.default_rng(1).bytes(4000))
  sf.write(d / "full.flac", x.T, RATE)
  data = (d / "full.flac").read_bytes()
  (d / "truncated.flac").write_bytes(data[:len(data) // 2])
  os.remove(d / "full.flac")
  mp3 = codecs.encode(music(2.0), RATE, "mp3")
  (d / "truncated.mp3").write_bytes(mp3[:len(mp3) // 3])
  nan = x.copy()
  nan[1, 100] = np.nan
  sf.write(d / "nan.wav", nan.T, RATE, subtype="FLOAT")
  inf = x.copy()
  inf[0, 5] = np.inf
  sf.write(d / "inf.wav", inf.T, RATE, subtype="FLOAT")
  sf.write(d / "short.wav", x[:, :600].T, RATE)
  return sorted(d.iterdir())


@pytest.mark.parametrize("case,words", [
    ("empty", ["no audio samples"]), ("garbage", ["cannot decode"]),
    ("truncated", []), ("nan", ["NaN or Inf"]), ("inf", ["NaN or Inf"]),
    ("short", ["shorter than one STFT window"])])
def test_bad_single_input(tmp_path, ckpt, capsys, bad_inputs, case, words):
  out = tmp_path / "out"
  out.mkdir()
  paths = [p for p in bad_inputs if p.stem == case]
  assert paths
  for p in paths:
    code, _, err = run(capsys, p, "-o", out / "new" / "x.wav", "--checkpoint", ckpt, *CHUNK)
    assert_one_line_error(code, err, str(p), *words)
  assert os.listdir(out) == []  # not even the folder that would have held the output


def test_batch_skips_bad_files_and_exits_1(tmp_path, ckpt, capsys, bad_inputs):
  folder = bad_inputs[0].parent
  sf.write(folder / "good.wav", music(0.6).T, RATE)
  (folder / "deeper").mkdir()
  sf.write(folder / "deeper" / "good2.flac", music(0.6, channels=1).T, RATE)
  code, out, err = run(capsys, folder, "-o", tmp_path / "out", "--checkpoint", ckpt,
                       "--format", "flac", *CHUNK)
  assert code == 1
  assert listing(tmp_path / "out") == ["deeper/good2.flac", "good.flac"]
  assert len(err) == len(bad_inputs) and all(e.startswith("error:") for e in err), err
  for p in bad_inputs:
    assert sum(e.startswith(f"error: {p}:") for e in err) == 1, (p.name, err)
  assert "restored 2 files" in out and f"{len(bad_inputs)} failed" in out


def test_usage_errors(tmp_path, ckpt, capsys):
  sf.write(tmp_path / "a.wav", music(0.3).T, RATE)
  (tmp_path / "empty_dir").mkdir()
  (tmp_path / "no_audio").mkdir()
  (tmp_path / "no_audio" / "readme.txt").write_text("hi")
  (tmp_path / "file.txt").write_text("a file, not a folder")
  a = tmp_path / "a.wav"
  cases = [
      ([tmp_path / "missing.wav", "-o", tmp_path / "o.wav"], "no such file"),
      ([tmp_path / "empty_dir", "-o", tmp_path / "o"], "no audio files"),
      ([tmp_path / "no_audio", "-o", tmp_path / "o"], "no audio files"),
      ([a, "-o", tmp_path / "o.mp3"], "can only write"),
      ([a, "-o", tmp_path / "o"], "can only write"),
      ([a, "-o", tmp_path / "o.wav", "--subtype", "VORBIS"], "subtype"),
      ([a, "-o", a], "input"),
      ([a, "-o", tmp_path / "file.txt" / "o.wav"], "not a folder"),
      ([a, tmp_path / "no_audio", "-o", tmp_path / "file.txt"], "is a file"),
      ([a, "-o", "/proc/apollo-test/o.wav"], "not writable"),
      ([a, "-o", tmp_path / "o.wav", "--batch-chunks", "0"], "batch-chunks"),
      ([a, "-o", tmp_path / "o.wav", "--overlap-seconds", "0.5"], "overlap_seconds"),
  ]
  for argv, words in cases:
    code, _, err = run(capsys, *CHUNK, "--checkpoint", ckpt, *argv)
    assert_one_line_error(code, err, words)
  assert sorted(os.listdir(tmp_path)) == ["a.wav", "empty_dir", "file.txt", "no_audio"]


def test_output_equal_to_input_in_a_batch_is_skipped(tmp_path, ckpt, capsys):
  (tmp_path / "in").mkdir()
  sf.write(tmp_path / "in" / "a.wav", music(0.3).T, RATE)
  sf.write(tmp_path / "in" / "b.flac", music(0.3).T, RATE)
  before = (tmp_path / "in" / "a.wav").read_bytes()
  code, out, err = run(capsys, tmp_path / "in", "-o", tmp_path / "in", "--checkpoint", ckpt,
                       "--overwrite", *CHUNK)
  assert code == 1 and len(err) == 1 and "refusing to overwrite an input" in err[0]
  assert (tmp_path / "in" / "a.wav").read_bytes() == before
  assert sorted(os.listdir(tmp_path / "in")) == ["a.wav", "b.flac", "b.wav"]


def test_checkpoint_errors(tmp_path, ckpt, capsys):
  sf.write(tmp_path / "a.wav", music(0.3).T, RATE)
  (tmp_path / "notes.pth").write_text("not a checkpoint")
  marker = tmp_path / "pwned"
  write_malicious_zip(str(tmp_path / "evil.pth"), f"touch {marker}")
  sd = load_file(ckpt)
  sd["net.0.band_net.MLP.1.weight"] = np.zeros((8, 16, 1), np.float32)
  save_file(sd, str(tmp_path / "bad_shapes.safetensors"))
  (tmp_path / "run").mkdir()
  cases = [("missing.pth", "not found"), ("notes.pth", "not a PyTorch zip"),
           ("evil.pth", "os.system"), ("bad_shapes.safetensors", "inconsistent"),
           ("run", "not a checkpoint directory")]
  for name, words in cases:
    code, _, err = run(capsys, tmp_path / "a.wav", "-o", tmp_path / "o.wav", "--checkpoint",
                       tmp_path / name, *CHUNK)
    assert_one_line_error(code, err, words)
  assert not marker.exists()
  assert not (tmp_path / "o.wav").exists()


def test_unavailable_device_is_clear(tmp_path, ckpt, capsys):
  import jax
  if jax.default_backend() != "cpu":
    pytest.skip("an accelerator is present")
  sf.write(tmp_path / "a.wav", music(0.3).T, RATE)
  code, _, err = run(capsys, tmp_path / "a.wav", "-o", tmp_path / "o.wav", "--checkpoint", ckpt,
                     "--device", "gpu", *CHUNK)
  assert_one_line_error(code, err, "no gpu device")


def test_interrupted_write_leaves_nothing(tmp_path):
  with pytest.raises(KeyboardInterrupt):
    with audio.Writer(str(tmp_path / "o.wav"), RATE, 2) as w:
      w.write(np.zeros((2, 1000), np.float32))
      raise KeyboardInterrupt
  assert os.listdir(tmp_path) == []
