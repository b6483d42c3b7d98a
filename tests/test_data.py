"""Data pipeline tests on tiny synthetic folders (0.5 s segments, a few tracks)."""

import dataclasses
import logging
import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from apollo_jax.data import (DataError, ValidationSet, default_data_config,
                             ensure_validation_set, make_train_iterator, mixing, pipeline,
                             scan)
import grain

RATE = 44100


def tone(seconds=2.0, rate=RATE, channels=2, seed=0, silent_until=0.0):
  """Broadband noise + harmonics, optionally silent for the first ``silent_until`` s."""
  rng = np.random.default_rng(seed)
  n = int(seconds * rate)
  t = np.arange(n) / rate
  x = 0.2 * rng.standard_normal((channels, n)) + 0.3 * np.sin(2 * np.pi * rng.uniform(100, 500) * t)
  x[:, :int(silent_until * rate)] = 0
  return (x / np.abs(x).max() * 0.5).astype(np.float32)


def write(path, x, rate=RATE):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  sf.write(path, x.T, rate)


def stems_corpus(root, tracks=3, names=("bass", "drums", "vocals")):
  for t in range(tracks):
    for s, name in enumerate(names):
      write(os.path.join(root, f"song{t}", f"{name}.wav"), tone(seed=10 * t + s))
  return root


def tiny_config(train_dirs, **overrides):
  cfg = default_data_config()
  cfg.train_dirs = [str(d) for d in train_dirs]
  cfg.segment_seconds = 0.5
  cfg.max_crop_tries = 3
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def batches(iterator, n, close=True):
  out = [next(iterator) for _ in range(n)]
  if close:
    iterator.close()
  return out


# --- Sources -------------------------------------------------------------------------------

def test_musdb_layout(tmp_path):
  for subset, tracks in (("train", 2), ("test", 1)):
    for t in range(tracks):
      for s, name in enumerate(("bass", "drums", "other", "vocals", "mixture")):
        write(tmp_path / subset / f"Artist - Song {t}" / f"{name}.wav", tone(1.0, seed=s))
  train = scan(str(tmp_path), "musdb", 0.5)
  assert [t["name"] for t in train.tracks] == ["Artist - Song 0", "Artist - Song 1"]
  assert sorted(train.tracks[0]["stems"]) == ["bass", "drums", "other", "vocals"]
  assert train.tracks[0]["mixture"][0]["path"].endswith("mixture.wav")
  assert len(scan(str(tmp_path), "musdb", 0.5, subset="test").tracks) == 1
  assert len(scan(str(tmp_path / "train"), "musdb", 0.5).tracks) == 2  # subset folder itself


def test_moisesdb_layout_sums_files_of_a_stem(tmp_path):
  track = tmp_path / "0a1b2c"
  write(track / "vocals" / "lead.wav", tone(seed=1))
  write(track / "vocals" / "backing.wav", tone(seed=2))
  write(track / "bass" / "bass.wav", tone(seed=3, channels=1))
  (track / "data.json").write_text("{}")
  index = scan(str(tmp_path), "moisesdb", 0.5)
  (t,) = index.tracks
  assert sorted(t["stems"]) == ["bass", "vocals"] and len(t["stems"]["vocals"]) == 2
  assert t["mixture"] == []
  spec = mixing.MixSpec.from_config(tiny_config([tmp_path]))
  segment = mixing.read_segment(t["stems"]["vocals"], 0.25, spec)
  expected = (tone(seed=1) + tone(seed=2))[:, int(0.25 * RATE):int(0.25 * RATE) + spec.segment]
  np.testing.assert_allclose(segment, expected, atol=1e-4)


def test_stems_layout_mixes_formats_rates_and_channels(tmp_path):
  write(tmp_path / "a" / "guitar.flac", tone(seed=1))
  write(tmp_path / "a" / "mixture.wav", tone(seed=2))
  write(tmp_path / "b" / "synth.wav", tone(rate=22050, channels=1, seed=3), rate=22050)
  index = scan(str(tmp_path), "stems", 0.5)
  a, b = index.tracks
  assert a["stems"].keys() == {"guitar"} and a["mixture"]
  assert b["stems"]["synth"][0]["rate"] == 22050
  spec = mixing.MixSpec.from_config(tiny_config([tmp_path]))
  x = mixing.read_segment(b["stems"]["synth"], 0.1, spec)  # resampled, mono -> stereo
  assert x.shape == (2, spec.segment)
  np.testing.assert_array_equal(x[0], x[1])


def test_paired_layout_and_aligned_crops(tmp_path):
  for name in ("album/one.wav", "two.flac"):
    clean = tone(seed=len(name))
    write(tmp_path / "clean" / name, clean)
    write(tmp_path / "degraded" / name, 0.5 * clean)
  write(tmp_path / "clean" / "orphan.wav", tone())
  index = scan(str(tmp_path), "paired", 0.5)
  assert [p["name"] for p in index.tracks] == ["album/one.wav", "two.flac"]
  assert list(index.skipped.values()) == ["no degraded file with the same name"]
  cfg = tiny_config([tmp_path], layout="paired")
  (batch,) = batches(make_train_iterator(cfg, seed=0, global_batch_size=4), 1)
  np.testing.assert_allclose(batch["degraded"], 0.5 * batch["target"], atol=1e-4)
  assert np.all(np.abs(batch["target"]).max(axis=(1, 2)) == 1.0)
  assert np.all(batch["bitrate"] == -1)


def test_bad_files_are_skipped_counted_and_logged_once(tmp_path, caplog):
  stems_corpus(tmp_path, tracks=2)
  (tmp_path / "song0" / "broken.wav").write_bytes(b"RIFF....not really a wav file")
  write(tmp_path / "song1" / "short.wav", tone(0.2))
  sf.write(tmp_path / "song1" / "empty.wav", np.zeros((0, 2)), RATE)
  cache = tmp_path / "index.json"
  with caplog.at_level(logging.WARNING):
    index = scan(str(tmp_path), "stems", 0.5, cache=str(cache))
  reasons = {os.path.basename(p): r for p, r in index.skipped.items()}
  assert reasons.keys() == {"broken.wav", "short.wav", "empty.wav"}
  assert reasons["broken.wav"].startswith("unreadable")
  assert reasons["short.wav"].startswith("too short")
  assert reasons["empty.wav"] == "empty"
  for name in reasons:
    assert sum(name in r.getMessage() for r in caplog.records) == 1
  assert len(index.tracks) == 2 and cache.exists()
  assert scan(str(tmp_path), "stems", 0.5, cache=str(cache)).tracks == index.tracks


def test_no_usable_audio_is_a_clear_error(tmp_path):
  (tmp_path / "song").mkdir()
  (tmp_path / "song" / "notes.txt").write_text("nothing here")
  with pytest.raises(DataError, match=rf"no usable audio in {tmp_path}.*expected <track>/<stem>"):
    scan(str(tmp_path), "stems", 0.5)
  with pytest.raises(DataError, match="clean/ and degraded/"):
    scan(str(tmp_path), "paired")
  with pytest.raises(DataError, match="unknown layout 'musdb18'"):
    scan(str(tmp_path), "musdb18")
  with pytest.raises(DataError, match="not a folder"):
    scan(str(tmp_path / "missing"), "stems")


def test_file_failing_at_read_time_is_skipped(tmp_path, caplog):
  stems_corpus(tmp_path, tracks=2)
  cfg = tiny_config([tmp_path], p_mixture=0.0, max_stems=1)
  index = pipeline.train_index(cfg)
  bad = tmp_path / "song0" / "bass.wav"
  bad.write_bytes(bad.read_bytes()[:100])  # truncated after the scan
  transform = pipeline.MixAndDegrade(index.tracks, mixing.MixSpec.from_config(cfg))
  with caplog.at_level(logging.WARNING):
    for i in range(12):
      item = transform.random_map(0, np.random.default_rng(i))
      assert item["target"].shape == (2, int(0.5 * RATE))
  assert transform.bad == {str(bad)}
  assert sum("skipping unreadable audio" in r.getMessage() for r in caplog.records) == 1


# --- Mixing --------------------------------------------------------------------------------

def test_activity_detection_skips_silence(tmp_path):
  write(tmp_path / "t" / "late.wav", tone(2.0, silent_until=1.0))
  spec = mixing.MixSpec.from_config(tiny_config([tmp_path], max_crop_tries=10))
  (track,) = scan(str(tmp_path), "stems", 0.5).tracks
  assert mixing.active_fraction(np.zeros((2, RATE)), RATE, -50) == 0.0
  assert mixing.active_fraction(tone(1.0), RATE, -50) == 1.0
  for seed in range(20):
    rng = np.random.default_rng(seed)
    x = mixing.active_crop(track["stems"]["late"], track["seconds"], rng, spec)
    assert mixing.active_fraction(x, RATE, spec.activity_threshold_db) >= 0.5


def test_mix_counts_mixture_probability_and_gains(tmp_path):
  stems_corpus(tmp_path, tracks=3)
  spec = mixing.MixSpec.from_config(tiny_config([tmp_path], max_stems=4, max_crop_tries=1))
  tracks = scan(str(tmp_path), "stems", 0.5).tracks
  counts = [mixing.mix(tracks, i % 3, np.random.default_rng(i), spec)[1] for i in range(200)]
  assert 0.4 < np.mean(np.equal(counts, 0)) < 0.6  # p_mixture = 0.5
  assert set(counts) == {0, 1, 2, 3, 4}


def test_items_are_rescaled_to_unit_peak_with_one_factor(tmp_path):
  stems_corpus(tmp_path)
  (batch,) = batches(make_train_iterator(tiny_config([tmp_path]), 0, 8), 1)
  peaks = np.maximum(np.abs(batch["target"]).max(axis=(1, 2)),
                     np.abs(batch["degraded"]).max(axis=(1, 2)))
  np.testing.assert_array_equal(peaks, 1.0)
  assert batch["target"].dtype == batch["degraded"].dtype == np.float32
  assert batch["target"].shape == batch["degraded"].shape == (8, 2, int(0.5 * RATE))


def test_bitrate_is_drawn_per_item_uniformly():
  spec = mixing.MixSpec.from_config(tiny_config([], segment_seconds=0.02))
  clean = tone(0.02)
  draws = [int(mixing.degrade_pair(clean, np.random.default_rng(i), spec)["bitrate"])
           for i in range(300)]
  values, counts = np.unique(draws, return_counts=True)
  assert list(values) == [24, 32, 48, 64, 96, 128]
  assert counts.min() > 25 and counts.max() < 75  # expected 50 each (sd 6.5)
  assert len(set(draws[:8])) > 2  # consecutive items differ (not once per worker)


def test_codec_mixture(tmp_path):
  spec = mixing.MixSpec.from_config(tiny_config([], segment_seconds=0.3, codecs=("mp3", "opus")))
  codecs_drawn = {int(mixing.degrade_pair(tone(0.3), np.random.default_rng(i), spec)["codec"])
                  for i in range(10)}
  assert codecs_drawn == {0, 1}
  with pytest.raises(DataError, match="unknown codec 'wma'"):
    mixing.MixSpec.from_config(tiny_config([], codecs=("wma",)))


# --- grain pipeline ------------------------------------------------------------------------

def test_same_seed_same_batches(tmp_path):
  stems_corpus(tmp_path)
  cfg = tiny_config([tmp_path])
  a = batches(make_train_iterator(cfg, 7, 4), 2)
  b = batches(make_train_iterator(cfg, 7, 4), 2)
  c = batches(make_train_iterator(cfg, 8, 4), 1)
  for x, y in zip(a, b):
    for key in x:
      assert x[key].tobytes() == y[key].tobytes()
  assert a[0]["target"].tobytes() != c[0]["target"].tobytes()


@pytest.mark.slow
def test_workers_give_the_same_batches(tmp_path):
  stems_corpus(tmp_path)
  cfg = tiny_config([tmp_path])
  expected = batches(make_train_iterator(cfg, 3, 4), 3)
  cfg.num_workers = 2
  got = batches(make_train_iterator(cfg, 3, 4), 3)
  for x, y in zip(expected, got):
    assert x["degraded"].tobytes() == y["degraded"].tobytes()


def test_iterator_state_restores_with_orbax(tmp_path):
  # Through the one writer/reader of training checkpoints, which saves the data position.
  from apollo_jax.training.checkpoint import Checkpoints, abstract
  stems_corpus(tmp_path / "data")
  cfg = tiny_config([tmp_path / "data"])
  it = make_train_iterator(cfg, 1, 2)
  batches(it, 2, close=False)
  state = {"x": np.zeros(3, np.float32)}
  ckpts = Checkpoints(str(tmp_path / "run"), keep=1, gen_config_json="{}")
  ckpts.save(1, state, it, {"step": 1})
  ckpts.wait()
  expected = batches(it, 2)
  restored = make_train_iterator(cfg, 1, 2)
  got_state, meta = ckpts.restore_latest(abstract(state), restored)
  ckpts.close()
  assert meta == {"step": 1} and got_state["x"].shape == (3,)
  for x, y in zip(expected, batches(restored, 2)):
    assert x["target"].tobytes() == y["target"].tobytes()
    assert x["degraded"].tobytes() == y["degraded"].tobytes()


def test_shards_split_the_global_batch(tmp_path):
  stems_corpus(tmp_path)
  cfg = tiny_config([tmp_path])
  (whole,) = batches(make_train_iterator(cfg, 5, 4), 1)
  parts = [batches(make_train_iterator(cfg, 5, 4, grain.sharding.ShardOptions(i, 2)), 1)[0]
           for i in range(2)]
  assert all(p["target"].shape[0] == 2 for p in parts)
  got = sorted(x.tobytes() for p in parts for x in p["target"])
  assert got == sorted(x.tobytes() for x in whole["target"])
  with pytest.raises(ValueError, match="not divisible"):
    make_train_iterator(cfg, 5, 3, grain.sharding.ShardOptions(0, 2))


# --- Validation set and demo corpus --------------------------------------------------------

def test_validation_set_is_written_once(tmp_path):
  stems_corpus(tmp_path / "val")
  cfg = tiny_config([], val_dirs=[str(tmp_path / "val")], val_items=4, val_seconds=0.5,
                    bitrates=(32, 128), cache_dir=str(tmp_path / "cache"))
  directory = ensure_validation_set(cfg)
  manifest = os.path.join(directory, "manifest.json")
  stamp = os.stat(manifest).st_mtime_ns
  assert ensure_validation_set(cfg) == directory and os.stat(manifest).st_mtime_ns == stamp
  items = list(ValidationSet(directory))
  assert [i["bitrate"] for i in items] == [32, 128, 32, 128]
  assert all(i["codec"] == "mp3" for i in items)
  assert all(i["category"] == "mixture" or i["category"].endswith("-stems") for i in items)
  assert items[0]["target"].shape == items[0]["degraded"].shape == (2, int(0.5 * RATE))
  assert len(scan(directory, "paired").tracks) == 4  # the set is itself a paired source
  batch = grain.MapDataset.source(ValidationSet(directory)).batch(2)[0]
  assert batch["target"].shape == (2, 2, int(0.5 * RATE))
  cfg.val_seed += 1
  assert ensure_validation_set(cfg) != directory


def test_demo_corpus_is_deterministic_and_feeds_training(tmp_path):
  from apollo_jax.data import demo
  a = demo.generate(str(tmp_path / "a"), tracks=2, seconds=2.5, seed=3, workers=1,
                    source="synth")
  demo.main([str(tmp_path / "b"), "--tracks", "2", "--seconds", "2.5", "--seed", "3",
             "--workers", "1", "--source", "synth"])
  for stem in demo.STEMS:
    pa, pb = (os.path.join(d, "track_001", f"{stem}.wav") for d in (a, tmp_path / "b"))
    assert open(pa, "rb").read() == open(pb, "rb").read()
  stems = {s: sf.read(os.path.join(a, "track_000", f"{s}.wav"))[0].T for s in demo.STEMS}
  mixture = sum(stems.values())
  spectrum = np.abs(np.fft.rfft(mixture, axis=-1)) ** 2
  freqs = np.fft.rfftfreq(mixture.shape[-1], 1 / RATE)
  assert spectrum[:, freqs > 16000].sum() > 1e-4 * spectrum.sum()  # content to restore
  assert stems["drums"].shape == (2, int(2.5 * RATE))
  # Training with no dataset generates the demo corpus once, in the cache folder.
  # (The soundfont source is tests/test_soundfont.py's; synth keeps this one fast.)
  cfg = tiny_config([], cache_dir=str(tmp_path / "cache"), demo_tracks=2, demo_seconds=2.0,
                    demo_source="synth")
  (batch,) = batches(make_train_iterator(cfg, 0, 2), 1)
  assert batch["target"].shape == (2, 2, int(0.5 * RATE))
  path = demo.ensure_demo_corpus(str(tmp_path / "cache"), tracks=2, seconds=2.0, source="synth")
  stamp = os.stat(os.path.join(path, "demo.json")).st_mtime_ns
  assert demo.ensure_demo_corpus(str(tmp_path / "cache"), tracks=2, seconds=2.0,
                                 source="synth") == path
  assert os.stat(os.path.join(path, "demo.json")).st_mtime_ns == stamp
  shutil.rmtree(path)


# --- Speed paths that must not change the data ------------------------------------------------
@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_partial_reads_equal_libsndfile(tmp_path, subtype):
  """Segments are read as int16 + NumPy scaling for 16-bit PCM, and only the asked frames:
  the values are exactly libsndfile's own float32 conversion."""
  from apollo_jax import audio
  x = tone(seconds=1.0, seed=3)
  x[:, :5], x[:, 5:10] = 1.0, -1.0  # full scale both ways
  path = str(tmp_path / f"a_{subtype}.wav")
  sf.write(path, x.T, RATE, subtype=subtype)
  for start, frames in ((0, -1), (0, 100), (1234, 20000), (40000, 10000)):
    got, rate = audio.load(path, start=start, frames=frames)
    with sf.SoundFile(path) as f:
      f.seek(start)
      want = f.read(frames, dtype="float32", always_2d=True).T
    assert rate == RATE and got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


def test_keeping_freed_memory_changes_no_item(tmp_path):
  from apollo_jax.data import heap
  stems_corpus(tmp_path)
  cfg = tiny_config([tmp_path])
  spec = mixing.MixSpec.from_config(cfg)
  tracks = pipeline.train_index(cfg).tracks
  before = mixing.training_item(tracks, 1, np.random.default_rng(5), spec)
  assert heap.keep_freed_memory() == (os.uname().sysname == "Linux")  # glibc here
  after = mixing.training_item(tracks, 1, np.random.default_rng(5), spec)
  for key in before:
    assert before[key].tobytes() == after[key].tobytes()


_LEAK_CHECK = """
import sys
import jax.numpy as jnp
from apollo_jax.data import default_data_config, make_train_iterator
cfg = default_data_config()
cfg.train_dirs, cfg.segment_seconds, cfg.max_crop_tries, cfg.num_workers = [sys.argv[1]], 0.5, 3, 2
it = make_train_iterator(cfg, 0, 4)
held = []
for _ in range(3):
  batch = next(it)
  assert type(batch["target"]).__name__ == "ndarray", type(batch["target"])
  held.append(jnp.asarray(batch["target"]))  # zero-copy on CPU: holds a view of the buffer
it.close()
print("ok")
"""


@pytest.mark.slow
def test_worker_batches_leave_no_shared_memory_behind(tmp_path):
  import subprocess
  import sys
  from tests.conftest import REPO
  stems_corpus(tmp_path / "data")
  out = subprocess.run([sys.executable, "-c", _LEAK_CHECK, str(tmp_path / "data")], cwd=REPO,
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
  assert "leaked shared_memory" not in out.stderr, out.stderr[-3000:]


def test_band_limited_sources():
  """band_limit leaves the band below the roll-off and removes all above the cutoff;
  p_band_limit=1 band-limits every training target, 0 leaves items as they were."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, RATE // 2)).astype(np.float32)
  y = mixing.band_limit(x, RATE, 12000.0)
  X, Y = (np.abs(np.fft.rfft(a, axis=-1)) for a in (x, y))
  f = np.fft.rfftfreq(x.shape[-1], 1 / RATE)
  assert y.dtype == np.float32
  np.testing.assert_allclose(Y[:, f < 11000 - 1], X[:, f < 11000 - 1], rtol=1e-4, atol=1e-3)
  assert np.max(Y[:, f >= 12000]) < 1e-3 * np.max(X)
  clean = 0.3 * x
  spec = mixing.MixSpec.from_config(tiny_config([], p_band_limit=1.0, band_limit_hz=(9000.0, 9000.0)))
  pair = mixing.degrade_pair(clean, np.random.default_rng(1), spec)
  T = np.abs(np.fft.rfft(pair["target"], axis=-1))
  assert np.max(T[:, f >= 9000]) < 1e-3 * np.max(T)
  off = mixing.MixSpec.from_config(tiny_config([]))
  a = mixing.degrade_pair(clean, np.random.default_rng(1), off)
  b = mixing.degrade_pair(clean, np.random.default_rng(1), dataclasses.replace(spec, p_band_limit=0.0))
  np.testing.assert_array_equal(a["target"], b["target"])
