"""End to end: eval.py on tiny synthetic files with a tiny random checkpoint."""

import csv
import dataclasses
import json
import os

import jax
import numpy as np
import pytest

import eval as eval_cli
from apollo_jax import audio, init_params
from apollo_jax.evaluation import evaluate as evaluation
from apollo_jax.inference import chunked
from apollo_jax.checkpoints.published import save_torch_generator
from tests.conftest import TINY

SR = 44100
# 8 heads, as the published files imply (a state dict does not record the head count).
TINY_8_HEADS = dataclasses.replace(TINY, num_heads=8)


def _music(seconds, channels, seed):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * SR)) / SR
  tone = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate([220, 440, 1320, 5000, 12000]))
  x = 0.2 * tone * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(t.shape)
  return np.stack([x * (1 - 0.1 * c) for c in range(channels)]).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval")
  data = root / "data"
  (data / "vocal").mkdir(parents=True)
  audio.save(str(data / "vocal" / "a.wav"), _music(1.5, 2, 0), SR)
  audio.save(str(data / "b.flac"), _music(1.5, 1, 1), SR)
  audio.save(str(data / "c.wav"), _music(1.5, 2, 2), SR)
  audio.save(str(data / "silent.wav"), np.zeros((2, 2 * SR), np.float32), SR)
  audio.save(str(data / "short.wav"), _music(0.5, 2, 3), SR)
  (data / "broken.wav").write_bytes(b"RIFF not really a wav file")
  (data / "manifest.csv").write_text("file,category\nvocal/a.wav,vocal\nb.flac,multi\n")
  ckpt = root / "tiny.safetensors"
  # Random weights from the shapes alone: tracing init is cheap, compiling it is not.
  shapes = jax.eval_shape(lambda: init_params(TINY_8_HEADS, jax.random.PRNGKey(0)))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: (0.2 * rng.standard_normal(s.shape)).astype(np.float32), shapes)
  save_torch_generator(TINY_8_HEADS, params, str(ckpt))
  return root, data, ckpt


def _args(data, out, ckpt, *extra):
  return ["--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--bitrates", "32,64",
          "--metrics", "sdr,si_snr,lsd", "--spectrograms", "1", "--no-progress", *extra]


@pytest.mark.slow
def test_end_to_end_outputs_and_resume(setup, capsys, monkeypatch):
  root, data, ckpt = setup
  out = root / "out"
  assert eval_cli.main(_args(data, out, ckpt, "--workers", "1")) == 0
  for name in ["results.csv", "results.json", "table.md", "bitrate_sdr.png", "bitrate_si_snr.png",
               "bitrate_lsd.png", "categories.png"]:
    assert (out / name).stat().st_size > 0, name
  assert [p.name for p in (out / "spectrograms").iterdir()] == ["b_mp332.png"]  # first file, lowest rate

  with open(out / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 3 * 2 * 2  # usable files x bitrates x systems (MP3 input, tiny)
  assert {r["system"] for r in rows} == {"MP3", "tiny"}
  assert {(r["file"], r["category"]) for r in rows} == {("vocal/a.wav", "vocal"), ("b.flac", "multi"), ("c.wav", "other")}
  mp3 = {(r["file"], int(r["bitrate"])): float(r["sdr"]) for r in rows if r["system"] == "MP3"}
  assert all(mp3[(f, 64)] > mp3[(f, 32)] for f, _ in mp3)  # more bits, less distortion

  doc = json.loads((out / "results.json").read_text())
  assert {s["file"] for s in doc["skipped"]} == {"broken.wav", "silent.wav", "short.wav"}
  reasons = " ".join(s["reason"] for s in doc["skipped"])
  assert "silent" in reasons and "shorter than 1 s" in reasons and "cannot" in reasons
  assert set(doc["summary"]["MP3"]) == {"vocal", "multi", "other", "overall"}
  table = (out / "table.md").read_text()
  assert "| MP3 |" in table and "| tiny |" in table and "Vocal (n=1)" in table and "Overall (n=3)" in table
  assert "broken.wav" in table

  # Resume: every row comes from the cache; nothing is restored again.
  capsys.readouterr()
  monkeypatch.setattr(chunked, "restore_array", lambda *a, **k: pytest.fail("restored a cached item"))
  assert eval_cli.main(_args(data, out, ckpt, "--workers", "0")) == 0
  assert "(12 from cache)" in capsys.readouterr().out
  with open(out / "results.csv") as f:
    assert list(csv.DictReader(f)) == rows


def test_category_all_without_manifest(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  audio.save(str(data / "x.wav"), _music(1.2, 2, 5), SR)
  res = evaluation.run([], str(data), str(tmp_path / "out"),
                       evaluation.EvalOptions(bitrates=(48,), metrics=("si_snr",), workers=0,
                                              spectrograms=0, progress=False), log=lambda s: None)
  assert [(r["category"], r["system"]) for r in res.rows] == [("all", "MP3")]
  assert "Overall (n=1)" in (tmp_path / "out" / "table.md").read_text()


def test_setup_errors_exit_2(setup, tmp_path, capsys):
  root, data, ckpt = setup
  bad_ckpt = tmp_path / "bad.safetensors"
  bad_ckpt.write_bytes(b"not a checkpoint")
  only_bad = tmp_path / "only_bad"
  only_bad.mkdir()
  (only_bad / "x.wav").write_bytes(b"junk")
  cases = [
      (_args(tmp_path / "missing", tmp_path / "o1", ckpt), "data folder not found"),
      (_args(data, tmp_path / "o2", bad_ckpt), "cannot load checkpoint"),
      (_args(only_bad, tmp_path / "o3", ckpt), "nothing usable"),
      (_args(data, tmp_path / "o4", ckpt, "--codec", "wma"), "unknown codec"),
      (_args(data, tmp_path / "o5", ckpt, "--metrics", "pesq"), "unknown metrics"),
  ]
  for argv, message in cases:
    capsys.readouterr()
    assert eval_cli.main(argv) == 2, message
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_category_clips():
  one = np.ones((2, 100), np.float32) * 0.1
  clips = evaluation.category_clips({"vocals": one, "drums": 2 * one, "bass": one, "keys": 0 * one})
  assert sorted(clips) == ["multi", "multi+vocal", "single", "vocal"]
  np.testing.assert_allclose(clips["single"], 2 * one)  # the loudest non-vocal stem
  np.testing.assert_allclose(clips["multi"], 3 * one)
  np.testing.assert_allclose(clips["multi+vocal"], 4 * one)
  # Silent stems do not count: no vocals here, and one instrument is not "multi".
  assert sorted(evaluation.category_clips({"vocals": 0 * one, "bass": one, "keys": 0 * one})) == ["single"]


def test_no_harm_lines_count_clips_below_the_codec_input():
  from apollo_jax.evaluation import report as eval_report
  rows = []
  for i, (codec_v, ours_v, codec_s, ours_s) in enumerate([(3.0, 3.5, 10, 12), (4.0, 3.9, 10, 9),
                                                           (2.0, 2.0, 5, float("nan"))]):
    rows += [{"file": f"f{i}", "category": "all", "bitrate": 192, "system": "MP3",
              "visqol": codec_v, "si_snr": codec_s},
             {"file": f"f{i}", "category": "all", "bitrate": 192, "system": "apollo",
              "visqol": ours_v, "si_snr": ours_s}]
  lines = eval_report.no_harm_lines(rows, ["MP3", "apollo"], ("visqol", "si_snr", "lsd"))
  assert lines == ["- apollo at 192 kbit/s: below the MP3 input on ViSQOL 1/3 (33%), "
                   "on SI-SNR 1/2 (50%)"]


@pytest.mark.slow
def test_high_bitrates_and_the_no_harm_report(setup, tmp_path):
  root, data, ckpt = setup
  out = tmp_path / "high"
  argv = ["--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--bitrates",
          "160,192,256,320", "--metrics", "si_snr", "--spectrograms", "0", "--no-progress",
          "--workers", "0", "--clip-seconds", "1"]
  assert eval_cli.main(argv) == 0
  table = (out / "table.md").read_text()
  assert "## No harm" in table
  for b in (160, 192, 256, 320):
    assert f"- tiny at {b} kbit/s: below the MP3 input on SI-SNR " in table, table
