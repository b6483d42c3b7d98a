"""The soundfont demo corpus (apollo_jax.data.soundfont via demo.py) and the held-out set
(apollo_jax.data.heldout). Renders need the fluidsynth command and the Debian soundfonts;
those tests skip, saying so, where they are missing."""

import csv
import json
import os

import numpy as np
import pytest
import soundfile

from apollo_jax.data import demo, heldout
from apollo_jax.data import soundfont as sf

RATE = 44100
TRAIN_SF2 = sf.find_soundfont()
HELDOUT_SF2 = sf.find_soundfont(sf.HELDOUT_SOUNDFONT)
needs_fluidsynth = pytest.mark.skipif(
    sf.find_fluidsynth() is None or TRAIN_SF2 is None,
    reason="needs the fluidsynth command and FluidR3_GM.sf2 (apt-get install fluidsynth "
           "fluid-soundfont-gm, or bash scripts/install.sh as root)")
needs_heldout = pytest.mark.skipif(
    sf.find_fluidsynth() is None or HELDOUT_SF2 is None or TRAIN_SF2 is None,
    reason="needs fluidsynth, FluidR3_GM.sf2 and TimGM6mb.sf2 (apt-get install fluidsynth "
           "fluid-soundfont-gm timgm6mb-soundfont)")


def read_stems(folder):
  return {f[:-4]: soundfile.read(os.path.join(folder, f), dtype="float32")[0].T
          for f in sorted(os.listdir(folder)) if f.endswith(".wav")}


@pytest.mark.slow  # ~11 s on the loaded 2-core machine: three renders
@needs_fluidsynth
def test_soundfont_stems_are_deterministic_audible_and_vary_with_the_seed(tmp_path):
  a = demo.generate(str(tmp_path / "a"), tracks=1, seconds=2.0, seed=3, source="soundfont")
  demo.main([str(tmp_path / "b"), "--tracks", "1", "--seconds", "2", "--seed", "3",
             "--source", "soundfont", "--soundfont", TRAIN_SF2])
  names = sorted(os.listdir(os.path.join(a, "track_000")))
  assert names == sorted(os.listdir(tmp_path / "b" / "track_000"))
  for name in names:  # byte-equal: the same seed gives the same files
    pa, pb = (os.path.join(d, "track_000", name) for d in (a, tmp_path / "b"))
    assert open(pa, "rb").read() == open(pb, "rb").read(), name
  stems = read_stems(os.path.join(a, "track_000"))
  assert set(stems) <= set(sf.STEMS) and len(stems) >= 3
  meta = json.load(open(os.path.join(a, "demo.json")))
  song = meta["songs"]["track_000"]
  assert meta["source"] == "soundfont" and meta["version"] == sf.VERSION
  assert set(song["levels"]) == set(stems) == set(song["programs"])
  for name, x in stems.items():
    assert x.shape == (2, 2 * RATE), name
    # Each stem plays in the first section (a 2 s track has one), so it is audible.
    assert song["sections"][name][0] and np.sqrt(np.mean(x ** 2)) > 1e-3, name
  mixture = sum(stems.values())
  assert np.abs(mixture).max() <= 10 ** (-0.9 / 20)  # -1 dBFS target, no clipping
  spectrum = np.abs(np.fft.rfft(mixture, axis=-1)) ** 2
  freqs = np.fft.rfftfreq(mixture.shape[-1], 1 / RATE)
  assert spectrum[:, freqs > 10000].sum() > 1e-4 * spectrum.sum()  # content to restore
  c = demo.generate(str(tmp_path / "c"), tracks=1, seconds=2.0, seed=4, source="soundfont")
  other = read_stems(os.path.join(c, "track_000"))
  assert set(other) != set(stems) or any(not np.array_equal(other[k], stems[k]) for k in stems)


def test_compositions_vary_and_keep_silent_sections():
  """No rendering: the plans alone (programs within each family, metre, tempo, silence)."""
  plans = [sf.compose(0, i, 30.0)[0] for i in range(12)]
  assert len({round(p.bpm) for p in plans}) == 12
  for family, pool in sf.PROGRAMS.items():
    used = {p.programs[family] for p in plans if family in p.programs}
    assert used <= set(pool)
  assert len({p.programs.get("guitar") for p in plans} - {None}) >= 2
  assert any(not all(on) for p in plans for on in p.plays.values())  # sections drop out
  assert {p.beats for p in plans} == {4}
  held = [sf.compose(heldout.SEED_OFFSET, i, 30.0, sf.HELDOUT)[0] for i in range(12)]
  assert 3 in {p.beats for p in held}  # the held-out style has waltzes too
  comp, parts = sf.compose(0, 1, 8.0)
  midi = sf.midi_file(parts[comp.instruments[0]], comp.bpm, comp.total_ticks)
  channels = {m.channel for m in midi.tracks[0] if hasattr(m, "channel")}
  assert channels == {sf.DRUM_CHANNEL if comp.instruments[0] == "drums" else 0}
  assert abs(midi.length - 8.0) < 0.01


def test_source_soundfont_errors_clearly_when_missing(tmp_path, monkeypatch, capsys):
  missing = str(tmp_path / "no.sf2")
  with pytest.raises(SystemExit) as e:
    demo.main([str(tmp_path / "x"), "--tracks", "1", "--seconds", "1", "--source",
               "soundfont", "--soundfont", missing])
  assert missing in str(e.value) and "--source synth" in str(e.value)
  monkeypatch.setattr(sf, "find_fluidsynth", lambda: None)
  with pytest.raises(sf.SoundfontError, match="fluidsynth"):
    demo.resolve_source("soundfont", missing)
  assert not os.path.exists(tmp_path / "x")


def test_auto_falls_back_to_synth_and_caches_apart(tmp_path, monkeypatch):
  monkeypatch.setattr(sf, "find_fluidsynth", lambda: None)
  source, soundfont, message = demo.resolve_source("auto")
  assert (source, soundfont) == ("synth", None) and "fluidsynth" in message
  path = demo.ensure_demo_corpus(str(tmp_path), tracks=1, seconds=1.0, source="auto")
  assert os.path.basename(path) == demo.corpus_name(1, 1.0, 0, RATE)
  assert json.load(open(os.path.join(path, "demo.json")))["source"] == "synth"
  assert sorted(os.listdir(os.path.join(path, "track_000"))) == sorted(
      f"{s}.wav" for s in demo.STEMS)
  with pytest.raises(ValueError, match="demo source"):
    demo.resolve_source("fluid")


@needs_fluidsynth
def test_cache_keys_on_the_soundfont():
  assert demo.resolve_source("auto")[:2] == ("soundfont", os.path.abspath(TRAIN_SF2))
  synth = demo.corpus_name(20, 12.0, 0, RATE)
  font = demo.corpus_name(20, 12.0, 0, RATE, TRAIN_SF2)
  assert synth.startswith(f"demo-v{demo.VERSION}-") and font != synth
  assert font.startswith(f"demo-sf{sf.VERSION}-FluidR3_GM-")
  if HELDOUT_SF2:
    assert demo.corpus_name(20, 12.0, 0, RATE, HELDOUT_SF2) != font


@needs_heldout
def test_heldout_set_is_ready_for_eval(tmp_path):
  from apollo_jax.evaluation import evaluate as evaluation
  out = str(tmp_path / "held")
  heldout.main([out, "--clips", "1", "--seconds", "1.5"])
  rows = list(csv.reader(open(os.path.join(out, "manifest.csv"))))
  assert rows[0] == ["file", "category"]
  categories = {c for _, c in rows[1:]}
  assert "TimGM6mb" in categories and categories <= {"TimGM6mb", "freepats"}
  for name, _ in rows[1:]:
    info = soundfile.info(os.path.join(out, name))
    assert (info.samplerate, info.channels, info.subtype) == (RATE, 2, "PCM_16")
    assert info.frames == int(1.5 * RATE)
  items = evaluation.find_items(out)
  assert sorted(i.category for i in items) == sorted(c for _, c in rows[1:])
  meta = json.load(open(os.path.join(out, "heldout.json")))
  assert all(d["style"] == "heldout" for d in meta["clips"].values())
  with pytest.raises(sf.SoundfontError, match="training soundfont"):
    heldout.engines(TRAIN_SF2)
