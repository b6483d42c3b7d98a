"""Issue 13 item 2: ``python -m apollo_jax.data.check`` (apollo-data-check)."""

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from apollo_jax.data import check

SR = 44100


def _noise(seconds, channels=2, seed=0, rate=SR):
  x = np.random.default_rng(seed).uniform(-0.3, 0.3, (int(seconds * rate), channels))
  return x.astype(np.float32)


def _stems(root):
  for t in range(3):
    track = root / f"track{t}"
    track.mkdir(parents=True)
    sf.write(track / "vocals.wav", _noise(4, seed=t), SR)
    sf.write(track / "drums.wav", _noise(4, seed=10 + t), SR)
  sf.write(root / "track0" / "bass.wav", _noise(4, 1, seed=20), 48000)  # mono, 48 kHz
  silent = np.zeros((4 * SR, 2), np.float32)
  silent[:SR] = _noise(1, seed=30)
  sf.write(root / "track1" / "other.wav", silent, SR)  # 3 of 4 s silent
  (root / "track2" / "broken.wav").write_bytes(b"RIFF nope")
  sf.write(root / "track2" / "short.wav", _noise(1, seed=40), SR)


def test_stems_table(tmp_path):
  _stems(tmp_path / "d")
  rep = check.check(check.Settings("stems", (str(tmp_path / "d"),)))
  rows = dict(rep.rows)
  assert not rep.errors
  assert rows["tracks"] == "3" and rows["stems per track"] == "2..3 (median 3)"
  assert "48000 Hz: 1 files (resampled to 44100)" in rows["sample rates"]
  assert "1: 1 files (duplicated)" in rows["channels"]
  assert rows["skipped files"] == "2"
  assert any("broken.wav" in p and "unreadable" in r for p, r in rep.skipped.items())
  assert any("short.wav" in p and "too short" in r for p, r in rep.skipped.items())
  silent = rows["silent (50 ms frames <= -50 dBFS)"]
  assert silent.startswith("9.5% of the audio")  # 60 of 633 frames and "1 files more than 50% silent" in silent
  assert float(rows["hours"]) == round(3 * 4 / 3600, 2)


def _pairs(root, offsets):
  for i, (shift, extra) in enumerate(offsets):
    clean = _noise(4, seed=i)
    degraded = np.concatenate([np.zeros((shift, 2), np.float32), clean])[:len(clean) + extra]
    for kind, x in (("clean", clean), ("degraded", degraded)):
      (root / kind).mkdir(parents=True, exist_ok=True)
      sf.write(root / kind / f"p{i}.wav", x, SR, subtype="FLOAT")


def test_paired_offsets_are_measured_and_flagged(tmp_path):
  _pairs(tmp_path / "p", [(0, 0), (1, 1), (1105, 1105), (0, -300)])
  rep = check.check(check.Settings("paired", (str(tmp_path / "p"),)), silence=False)
  got = {p["name"]: (p["offset"], p["length_diff"], p["flag"]) for p in rep.pairs}
  assert got == {"p0.wav": (0, 0, False), "p1.wav": (1, 1, False),
                 "p2.wav": (1105, 1105, True), "p3.wav": (0, -300, True)}
  assert len(rep.errors) == 1 and "2 of 4 pairs" in rep.errors[0]


def _run(*args):
  return subprocess.run([sys.executable, "-m", "apollo_jax.data.check", *args],
                        capture_output=True, text=True)


@pytest.mark.slow
def test_command_exit_codes(tmp_path):
  _stems(tmp_path / "d")
  r = _run("--layout", "stems", str(tmp_path / "d"))
  assert r.returncode == 0, r.stderr
  assert "tracks" in r.stdout and "ok: training can start" in r.stdout
  assert "skipped" in r.stdout and "broken.wav" in r.stdout
  r = _run("--layout", "musdb", str(tmp_path / "missing"))
  assert r.returncode == 2 and "training cannot start" in r.stderr and "not a folder" in r.stderr
  _pairs(tmp_path / "p", [(0, 0), (50, 0)])
  r = _run("--layout", "paired", str(tmp_path / "p"), "--no-silence")
  assert r.returncode == 2 and "off by more than one sample" in r.stderr
  assert "<- off by more than 1 sample" in r.stdout
  assert _run("--layout", "paired", str(tmp_path / "p"), "--no-silence",
              "--allow-misaligned").returncode == 0
  r = _run("--layout", "stems")
  assert r.returncode == 2 and r.stderr.count("\n") == 1


@pytest.mark.slow
def test_config_with_overrides(tmp_path):
  _stems(tmp_path / "d")
  r = _run("--config", "configs/apollo.py:demo", "--config.data.layout=stems",
           f"--config.data.train_dirs=('{tmp_path / 'd'}',)", "--no-silence")
  assert r.returncode == 0, r.stderr
  assert "train_dirs: stems in" in r.stdout
  r = _run("--config", "configs/apollo.py:demo")
  assert r.returncode == 0 and "demo corpus" in r.stdout
