"""Demo corpus: procedurally composed multi-stem music that needs no download.

    python -m apollo_jax.data.demo OUT_DIR --tracks 20 --seconds 12 [--source auto|soundfont|synth]

writes ``OUT_DIR/<track>/<stem>.wav`` (the ``"stems"`` layout; the mixture is the sum of
the stems) and ``OUT_DIR/demo.json``. Two sources:

- ``soundfont``: General MIDI parts rendered with real instrument samples by FluidSynth from
  a GM soundfont, one stem per instrument (``apollo_jax.data.soundfont``). Needs the
  ``fluidsynth`` command and a soundfont (``--soundfont``, default ``FluidR3_GM.sf2`` from
  the usual system folders).
- ``synth``: this module's own synthesiser, stems ``{drums,bass,keys,pads,lead,vocals}``
  (described below). Needs nothing but NumPy and SciPy.
- ``auto`` (the default) takes ``soundfont`` when FluidSynth and the soundfont are found,
  else ``synth``, and says which in one line.

The stems are The stems are
16-bit WAV rather than FLAC because WAV seeks in constant time, so a training segment is
read without decoding the file up to it (a FLAC seek without a seek table cost ~10 ms).

The synthesiser: every track has its own tempo, key, scale, chord progression, swing, timbres, stereo
placement, room and arrangement (instruments drop out in some sections, so stems contain
real silence). The content is built to make codec restoration matter: hi-hats and crashes
(metallic partials and noise up to 20 kHz), band-limited saw/square/FM tones with
harmonics up to 20 kHz, a voice-like stem (glottal source through vowel formants, vibrato,
sibilant consonants and breath) and reverberation.

The output depends only on the seed, the track index, the length and the rate (NumPy and
SciPy random generators and filters; no randomness from the clock or the process).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time

import numpy as np
import scipy.fft
import scipy.signal

from apollo_jax import audio
from apollo_jax.data import soundfont as sf

log = logging.getLogger(__name__)
VERSION = 1  # bump when the synthesis changes, so cached corpora are regenerated
SOURCES = ("auto", "soundfont", "synth")
STEMS = ("drums", "bass", "keys", "pads", "lead", "vocals")
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
}
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 4), (0, 6, 5, 4),
                (1, 4, 0, 0), (0, 2, 3, 4), (5, 4, 3, 4))
# Vowel formants (Hz) and bandwidths, roughly an adult voice.
VOWELS = {
    "a": ((800, 1150, 2900, 3900), (80, 90, 120, 130)),
    "e": ((400, 1600, 2700, 3300), (60, 80, 120, 150)),
    "i": ((300, 2200, 2950, 3800), (50, 100, 120, 150)),
    "o": ((450, 800, 2830, 3500), (70, 80, 100, 130)),
    "u": ((325, 700, 2530, 3500), (50, 60, 170, 180)),
}
_TABLE = 2048


def midi_hz(note: float) -> float:
  return 440.0 * 2.0 ** ((note - 69) / 12)


@functools.lru_cache(maxsize=None)
def _wavetable(shape: str, harmonics: int) -> np.ndarray:
  """One period of a band-limited wave with ``harmonics`` partials (+1 sample to interpolate)."""
  k = np.arange(1, harmonics + 1)
  amps = {"saw": 1 / k, "square": np.where(k % 2 == 1, 1 / k, 0.0),
          "triangle": np.where(k % 2 == 1, (-1.0) ** ((k - 1) // 2) / k ** 2, 0.0)}[shape]
  phase = np.arange(_TABLE) / _TABLE
  table = amps @ np.sin(2 * np.pi * np.outer(k, phase))
  table /= np.abs(table).max()
  return np.append(table, table[0]).astype(np.float32)


def osc(freq, n: int, rate: int, shape: str = "saw", phase: float = 0.0) -> np.ndarray:
  """Alias-free oscillator: ``freq`` (Hz, scalar or per sample) -> ``(n,)`` float32."""
  if np.ndim(freq) == 0:
    top = float(freq)
    cycles = phase + np.arange(1, n + 1) * (float(freq) / rate)
  else:
    top = float(np.max(freq))
    cycles = phase + np.cumsum(np.asarray(freq, np.float64)) / rate
  table = _wavetable(shape, int(np.clip(0.47 * rate / max(top, 1.0), 1, 256)))
  pos = (cycles - np.floor(cycles)) * _TABLE
  i = pos.astype(np.int32)
  frac = (pos - i).astype(np.float32)
  lo = np.take(table, i)
  return lo + (np.take(table, i + 1) - lo) * frac


@functools.lru_cache(maxsize=None)
def _sos(order: int, cutoff, btype: str, rate: int):
  return scipy.signal.butter(order, cutoff, btype, fs=rate, output="sos")


def filt(x: np.ndarray, cutoff, btype: str, rate: int, order: int = 2) -> np.ndarray:
  """Butterworth filter along the last axis (``cutoff`` a tuple for band-pass)."""
  return scipy.signal.sosfilt(_sos(order, cutoff, btype, rate), x, axis=-1).astype(np.float32)


def envelope(n: int, rate: int, attack: float, decay: float, release: float = 0.0,
             hold: float | None = None) -> np.ndarray:
  """Attack ramp, exponential decay; after ``hold`` seconds a ``release`` fade to zero."""
  t = np.arange(n, dtype=np.float32) / rate
  env = np.minimum(t / max(attack, 1e-4), 1.0) * np.exp(-t / decay)
  if hold is not None and release > 0:
    env *= np.clip(1 - (t - hold) / release, 0, 1)
  return env.astype(np.float32)


def pan(x: np.ndarray, position: float) -> np.ndarray:
  """Mono ``(n,)`` -> stereo ``(2, n)``, constant power, ``position`` in [-1, 1]."""
  angle = (position + 1) * np.pi / 4
  return np.stack([np.cos(angle) * x, np.sin(angle) * x]).astype(np.float32)


def add(dest: np.ndarray, x: np.ndarray, start: int) -> None:
  """``dest[..., start:start+len(x)] += x``, clipped to ``dest``'s length."""
  if start >= dest.shape[-1] or start + x.shape[-1] <= 0:
    return
  lo = max(0, -start)
  hi = min(x.shape[-1], dest.shape[-1] - start)
  dest[..., start + lo:start + hi] += x[..., lo:hi]


class Song:
  """The musical plan of one track: tempo, key, harmony and arrangement."""

  def __init__(self, rng: np.random.Generator, seconds: float, rate: int):
    self.rng, self.rate = rng, rate
    self.samples = int(seconds * rate)
    self.bpm = float(rng.uniform(76, 152))
    self.step = 60.0 / self.bpm / 4  # a sixteenth note, seconds
    self.swing = float(rng.choice([0.0, 0.0, 0.12, 0.25]))
    self.root = int(rng.integers(40, 52))  # bass register, MIDI
    self.scale_name = str(rng.choice(sorted(SCALES)))
    self.scale = SCALES[self.scale_name]
    self.progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    self.bars_per_chord = int(rng.choice([1, 1, 2]))
    self.bars = int(np.ceil(seconds / (16 * self.step))) + 1
    # Arrangement: 4-bar sections; each stem plays in a random subset of them.
    sections = (self.bars + 3) // 4
    density = {"drums": 0.8, "bass": 0.85, "keys": 0.75, "pads": 0.6, "lead": 0.5,
               "vocals": 0.55}
    self.plays = {}
    for stem in STEMS:
      on = rng.random(sections) < density[stem]
      if stem == "drums" and sections > 2:
        on[0] = rng.random() < 0.4  # often an intro without drums
      on[int(rng.integers(1 if stem == "drums" and sections > 2 else 0, sections))] = True
      self.plays[stem] = on

  def time(self, bar: int, step: int) -> float:
    """Onset in seconds of sixteenth ``step`` (0..15) of ``bar``, with swing."""
    return (bar * 16 + step + (self.swing if step % 2 else 0.0)) * self.step

  def sample(self, seconds: float, jitter: float = 0.004) -> int:
    return int(round((seconds + self.rng.normal(0, jitter)) * self.rate))

  def playing(self, stem: str, bar: int) -> bool:
    return bool(self.plays[stem][bar // 4])

  def chord(self, bar: int, size: int = 3) -> list[int]:
    """Scale-degree triad/seventh of ``bar`` as MIDI notes above the bass root."""
    degree = self.progression[(bar // self.bars_per_chord) % len(self.progression)]
    return [self.note(degree + 2 * i) for i in range(size)]

  def note(self, degree: int, octave: int = 0) -> int:
    octave += degree // 7
    return self.root + self.scale[degree % 7] + 12 * octave


def drums(song: Song) -> np.ndarray:
  rng, rate = song.rng, song.rate
  out = np.zeros((2, song.samples), np.float32)
  t = np.arange(int(0.6 * rate)) / rate
  f_hi, f_lo = rng.uniform(110, 180), rng.uniform(42, 58)
  kick = np.sin(2 * np.pi * np.cumsum(f_lo + (f_hi - f_lo) * np.exp(-t / 0.03)) / rate)
  kick *= np.exp(-t / rng.uniform(0.12, 0.3))
  kick[:int(0.004 * rate)] += 0.5 * rng.standard_normal(int(0.004 * rate))
  n = int(0.35 * rate)
  tone = sum(np.sin(2 * np.pi * f * t[:n]) for f in rng.uniform(160, 340, 2))
  snare = (0.5 * tone * np.exp(-t[:n] / 0.05)
           + filt(rng.standard_normal(n), rng.uniform(1200, 2500), "highpass", rate)
           * np.exp(-t[:n] / rng.uniform(0.08, 0.2)))
  # Hats and crash: six square partials at inharmonic ratios (as in analogue drum machines)
  # plus noise, high-passed: energy up to the Nyquist frequency.
  partials = rng.uniform(300, 900) * np.array([1.0, 1.342, 1.2312, 1.6532, 1.9523, 2.1523])

  def metal(seconds, decay, cutoff):
    m = int(seconds * rate)
    x = sum(osc(f, m, rate, "square", float(rng.random())) for f in partials) / 6
    x = x + 0.6 * rng.standard_normal(m)
    return filt(x, cutoff, "highpass", rate, order=4) * envelope(m, rate, 0.0005, decay)

  closed = [metal(0.12, rng.uniform(0.02, 0.05), rng.uniform(6000, 8500)) for _ in range(4)]
  opened = metal(0.6, rng.uniform(0.15, 0.3), 6500)
  crash = np.stack([metal(2.5, 0.8, 4000) for _ in range(2)])
  kick_pattern = [[0, 8], [0, 6, 8], [0, 7, 10], [0, 4, 8, 12], [0, 3, 8, 11]][rng.integers(5)]
  hat_steps = [range(0, 16, 2), range(16)][rng.integers(2)]
  hat_pan = float(rng.uniform(-0.5, 0.5))
  for bar in range(song.bars):
    if not song.playing("drums", bar):
      continue
    if bar % 4 == 0 or not song.playing("drums", max(bar - 1, 0)):
      add(out, crash * rng.uniform(0.3, 0.5), song.sample(song.time(bar, 0)))
    for s in kick_pattern:
      add(out, pan(kick * rng.uniform(0.8, 1.0), 0.0), song.sample(song.time(bar, s)))
    for s in (4, 12):
      add(out, pan(snare * rng.uniform(0.7, 0.9), 0.05), song.sample(song.time(bar, s)))
    if rng.random() < 0.5:  # ghost note
      add(out, pan(snare * 0.15, 0.05), song.sample(song.time(bar, int(rng.integers(16)))))
    for s in hat_steps:
      open_hat = s % 8 == 6 and rng.random() < 0.3
      hat = opened if open_hat else closed[int(rng.integers(len(closed)))]
      level = (0.45 if s % 4 == 0 else 0.3) * rng.uniform(0.7, 1.0)
      add(out, pan(hat * level, hat_pan + rng.uniform(-0.1, 0.1)), song.sample(song.time(bar, s)))
  return out


def bass(song: Song) -> np.ndarray:
  rng, rate = song.rng, song.rate
  out = np.zeros(song.samples, np.float32)
  shape = str(rng.choice(["saw", "square"]))
  cutoff = float(rng.uniform(350, 1500))
  steps = [[0, 8], [0, 4, 8, 12], [0, 3, 6, 8, 11, 14], list(range(0, 16, 2))][rng.integers(4)]
  for bar in range(song.bars):
    if not song.playing("bass", bar):
      continue
    root = song.chord(bar)[0]
    for i, s in enumerate(steps):
      note = root + (12 if rng.random() < 0.15 else 0)  # octave jumps
      note += 7 if i % 4 == 3 and rng.random() < 0.3 else 0  # passing fifths
      length = (steps[i + 1] if i + 1 < len(steps) else 16) - s
      dur = length * song.step * rng.uniform(0.6, 0.95)
      n = int(dur * rate)
      x = osc(midi_hz(note), n, rate, shape) * envelope(n, rate, 0.004, 0.6, 0.02, dur - 0.02)
      add(out, x * rng.uniform(0.7, 1.0), song.sample(song.time(bar, s)))
  return pan(filt(out, cutoff, "lowpass", rate), 0.0)


@functools.lru_cache(maxsize=4096)
def _pluck(freq: float, rate: int, brightness: float, seconds: float) -> np.ndarray:
  """Plucked string: partials decaying faster the higher they are, slightly inharmonic."""
  n = int(seconds * rate)
  t = np.arange(n, dtype=np.float32) / rate
  step = np.exp(-t * (1.2 / brightness))  # extra decay per partial number
  decay = np.exp(-1.5 * t)
  out = np.zeros(n, np.float32)
  for k in range(1, 41):
    fk = float(freq * k * np.sqrt(1 + 0.0004 * k * k))
    if fk > 0.47 * rate:
      break
    decay *= step
    out += np.sin((2 * np.pi * fk) * t) * decay / k
  return out / np.abs(out).max()


def _fm_piano(freq: float, n: int, rate: int, ratio: float, index: float) -> np.ndarray:
  """Two-operator FM electric piano/bell: bright attack that mellows as it decays."""
  t = np.arange(n, dtype=np.float32) / rate
  mod = index * np.exp(-t / 0.4) * np.sin(2 * np.pi * freq * ratio * t)
  return np.sin(2 * np.pi * freq * t + mod) * envelope(n, rate, 0.002, 0.9)


def keys(song: Song) -> np.ndarray:
  rng, rate = song.rng, song.rate
  out = np.zeros((2, song.samples), np.float32)
  timbre = str(rng.choice(["pluck", "fm"]))
  brightness = float(rng.uniform(4, 12))
  ratio, index = float(rng.choice([1.0, 2.0, 3.5])), float(rng.uniform(1, 4))
  arpeggio = rng.random() < 0.5
  position = float(rng.uniform(-0.6, 0.6))
  for bar in range(song.bars):
    if not song.playing("keys", bar):
      continue
    notes = [n + 12 for n in song.chord(bar, size=int(rng.choice([3, 4])))]
    hits = ([(s, [notes[(s // 2) % len(notes)]]) for s in range(0, 16, 2)] if arpeggio
            else [(s, notes) for s in (0, 6, 8, 14) if s == 0 or rng.random() < 0.6])
    for s, chord in hits:
      for note in chord:
        f = midi_hz(note + (12 if arpeggio and rng.random() < 0.3 else 0))
        if timbre == "pluck":
          x = _pluck(round(f, 2), rate, brightness, 1.5)
        else:
          x = _fm_piano(f, int(1.5 * rate), rate, ratio, index)
        add(out, pan(x * rng.uniform(0.5, 0.8) / len(chord) ** 0.5, position),
            song.sample(song.time(bar, s)))
  return out


def pads(song: Song) -> np.ndarray:
  rng, rate = song.rng, song.rate
  out = np.zeros((2, song.samples), np.float32)
  detune = float(rng.uniform(0.002, 0.008))
  shape = str(rng.choice(["saw", "triangle"]))
  span = song.bars_per_chord
  for bar in range(0, song.bars, span):
    if not song.playing("pads", bar):
      continue
    dur = 16 * span * song.step
    n = int((dur + 0.8) * rate)
    env = envelope(n, rate, rng.uniform(0.2, 0.8), 1e4, 0.8, dur)
    for note in song.chord(bar, size=4):
      f = midi_hz(note + 12)
      for c, sign in enumerate((-1, 1)):  # left and right detuned apart: a wide pad
        voice = osc(f * (1 + sign * detune), n, rate, shape, float(rng.random()))
        add(out[c], voice * env * 0.25, song.sample(song.time(bar, 0), 0.0))
  return filt(out, float(rng.uniform(2500, 7000)), "lowpass", rate, order=1)


def lead(song: Song) -> np.ndarray:
  rng, rate = song.rng, song.rate
  out = np.zeros(song.samples, np.float32)
  shape = str(rng.choice(["saw", "square"]))
  degree = 7
  for bar in range(song.bars):
    if not song.playing("lead", bar):
      continue
    s = 0
    while s < 16:
      length = int(rng.choice([2, 2, 4, 4, 6, 8]))
      if rng.random() < 0.75:
        degree = int(np.clip(degree + rng.choice([-2, -1, -1, 1, 1, 2, 3]), 5, 16))
        dur = min(length, 16 - s) * song.step * 0.9
        n = int(dur * rate)
        t = np.arange(n) / rate
        vibrato = 1 + 0.012 * np.sin(2 * np.pi * 5.5 * t) * np.clip((t - 0.15) / 0.2, 0, 1)
        x = osc(midi_hz(song.note(degree, 1)) * vibrato, n, rate, shape)
        add(out, x * envelope(n, rate, 0.01, 2.0, 0.05, dur - 0.05) * 0.5,
            song.sample(song.time(bar, s)))
      s += length
  return pan(filt(out, float(rng.uniform(3000, 12000)), "lowpass", rate, order=1),
             float(rng.uniform(-0.3, 0.3)))


@functools.lru_cache(maxsize=256)
def _formant_filters(vowel: str, rate: int):
  freqs, widths = VOWELS[vowel]
  return [scipy.signal.iirpeak(f, f / b, fs=rate) for f, b in zip(freqs, widths) if f < 0.45 * rate]


def vocals(song: Song) -> np.ndarray:
  """Voice-like stem: sung syllables (glottal pulses through vowel formants, vibrato,
  jitter), sibilant consonant onsets and breath noise."""
  rng, rate = song.rng, song.rate
  out = np.zeros(song.samples, np.float32)
  register = 12 if rng.random() < 0.5 else 0
  degree = 2
  for bar in range(song.bars):
    if not song.playing("vocals", bar):
      continue
    s = int(rng.integers(0, 3))
    while s < 15:
      length = int(rng.choice([2, 3, 4, 4, 6]))
      degree = int(np.clip(degree + rng.choice([-2, -1, 0, 1, 1, 2]), 0, 9))
      dur = min(length, 16 - s) * song.step * 0.95
      n = int(dur * rate)
      t = np.arange(n) / rate
      f0 = midi_hz(song.note(degree, 1) + register - 12)
      wobble = 1 + 0.015 * np.sin(2 * np.pi * rng.uniform(4.8, 6.2) * t) * np.clip(t / 0.3, 0, 1)
      jitter = 1 + 0.003 * filt(rng.standard_normal(n), 30.0, "lowpass", rate)
      source = osc(f0 * wobble * jitter, n, rate, "saw") + 0.05 * rng.standard_normal(n)
      vowel = str(rng.choice(sorted(VOWELS)))
      gains = (1.0, 0.6, 0.35, 0.2)
      voice = sum(g * scipy.signal.lfilter(b, a, source)
                  for g, (b, a) in zip(gains, _formant_filters(vowel, rate)))
      voice = voice * envelope(n, rate, 0.03, 3.0, 0.06, dur - 0.06)
      if rng.random() < 0.4:  # consonant: a short sibilant burst before the vowel
        m = int(rng.uniform(0.04, 0.09) * rate)
        hiss = filt(rng.standard_normal(m), rng.uniform(4000, 7000), "highpass", rate, order=4)
        voice[:m] += 0.3 * hiss * envelope(m, rate, 0.005, 0.03)
      add(out, 0.5 * voice.astype(np.float32), song.sample(song.time(bar, s)))
      s += length
  return pan(out, float(rng.uniform(-0.1, 0.1)))


def _room(rng: np.random.Generator, rate: int, samples: int):
  """A stereo room: ``x (2, samples) -> reverberated (2, samples)``. Its impulse response
  is decorrelated decaying noise, darkened; its spectrum is computed once per track."""
  decay = rng.uniform(0.25, 0.7)
  taps = int(min(3 * decay, 1.6) * rate)
  t = np.arange(taps) / rate
  ir = rng.standard_normal((2, taps)) * np.exp(-t / decay * 3)
  ir = filt(ir, float(rng.uniform(5000, 10000)), "lowpass", rate, order=1)
  ir[:, :int(0.01 * rate)] = 0  # pre-delay
  ir /= np.sqrt(np.sum(ir ** 2, axis=1, keepdims=True))
  size = scipy.fft.next_fast_len(samples + taps, real=True)
  spectrum = scipy.fft.rfft(ir, size, axis=-1)

  def reverb(x: np.ndarray) -> np.ndarray:
    wet = scipy.fft.irfft(scipy.fft.rfft(x, size, axis=-1) * spectrum, size, axis=-1)
    return wet[:, :samples].astype(np.float32)
  return reverb


def synthesize(seed: int, index: int, seconds: float,
               rate: int = 44100) -> tuple[dict[str, np.ndarray], dict]:
  """Track ``index`` of corpus ``seed``: ``({stem: (2, samples) float32}, description)``.

  The stems sum to a mixture peaking at about -1 dBFS.
  """
  rng = np.random.default_rng([seed, index, VERSION])
  song = Song(rng, seconds, rate)
  makers = {"drums": drums, "bass": bass, "keys": keys, "pads": pads, "lead": lead,
            "vocals": vocals}
  room = _room(rng, rate, song.samples)
  levels_db = {"drums": 0.0, "bass": -2.0, "keys": -6.0, "pads": -9.0, "lead": -6.0,
               "vocals": -3.0}
  stems = {}
  for name in STEMS:
    x = makers[name](song)
    wet = {"drums": 0.1, "bass": 0.0}.get(name, float(rng.uniform(0.15, 0.4)))
    if wet:
      x = x + wet * room(x)
    rms = np.sqrt(np.mean(x ** 2)) + 1e-9
    stems[name] = x * (10 ** ((levels_db[name] + rng.uniform(-3, 3)) / 20) * 0.1 / rms)
  mixture = sum(stems.values())
  scale = 10 ** (-1 / 20) / max(np.abs(mixture).max(), 1e-9)
  scale = min(scale, 0.99 / max(np.abs(s).max() for s in stems.values()))
  stems = {k: (v * scale).astype(np.float32) for k, v in stems.items()}
  description = {"bpm": round(song.bpm, 2), "root_midi": song.root, "scale": song.scale_name,
                 "progression": list(song.progression), "swing": song.swing,
                 "sections": {k: [bool(b) for b in v] for k, v in song.plays.items()}}
  return stems, description


def resolve_source(source: str = "auto", soundfont: str | None = None) -> tuple[str, str | None, str]:
  """``(source, soundfont path or None, one-line message)`` for a requested ``source``.

  ``"soundfont"`` raises ``soundfont.SoundfontError`` when FluidSynth or the soundfont is
  missing; ``"auto"`` falls back to ``"synth"`` and says why.
  """
  if source not in SOURCES:
    raise ValueError(f"demo source must be one of {SOURCES}, got {source!r}")
  if source == "synth":
    return "synth", None, "demo corpus: built-in synthesiser (source synth)"
  path = soundfont or sf.find_soundfont()
  binary = sf.find_fluidsynth()
  if source == "auto" and (binary is None or not path or not os.path.isfile(path)):
    why = ("the fluidsynth command is not on PATH" if binary is None else
           f"soundfont {soundfont} not found" if soundfont else
           f"no {sf.TRAIN_SOUNDFONT} in {', '.join(sf.SEARCH_DIRS)}")
    return "synth", None, (f"demo corpus: built-in synthesiser ({why}; install fluidsynth and "
                           "fluid-soundfont-gm for real instrument timbres)")
  binary, path = sf.check_soundfont(path or "", binary)
  return "soundfont", path, (f"demo corpus: soundfont {path} rendered by fluidsynth "
                             f"{sf.fluidsynth_version(binary)} (source {source})")


def _write_track(args) -> tuple[str, dict]:
  out_dir, seed, index, seconds, rate, soundfont = args
  if soundfont:
    stems, description = sf.synthesize(seed, index, seconds, rate, soundfont)
  else:
    stems, description = synthesize(seed, index, seconds, rate)
  name = f"track_{index:03d}"
  folder = os.path.join(out_dir, name)
  os.makedirs(folder, exist_ok=True)
  for stem, x in stems.items():
    audio.save(os.path.join(folder, f"{stem}.wav"), x, rate, subtype="PCM_16")
  return name, description


def generate(out_dir: str, tracks: int, seconds: float, seed: int = 0, sample_rate: int = 44100,
             workers: int | None = None, source: str = "auto",
             soundfont: str | None = None) -> str:
  """Writes ``tracks`` tracks of ``seconds`` each into ``out_dir`` (stems layout).

  ``source`` and ``soundfont`` as in ``resolve_source``. ``workers`` (default: up to 2)
  make tracks in parallel: spawned processes for the synthesiser (one for less than a
  minute of music), threads driving FluidSynth processes for the soundfont. The output
  does not depend on it.
  """
  if tracks < 1 or seconds <= 0:
    raise ValueError(f"need tracks >= 1 and seconds > 0, got tracks={tracks}, seconds={seconds}")
  source, soundfont, _ = resolve_source(source, soundfont)
  os.makedirs(out_dir, exist_ok=True)
  jobs = [(out_dir, seed, i, float(seconds), sample_rate, soundfont) for i in range(tracks)]
  if workers is None:  # starting processes costs seconds: only worth it for real sizes
    workers = (min(2, os.cpu_count() or 1) if soundfont or tracks * seconds >= 60 else 1)
  workers = min(workers, tracks)
  if workers > 1 and soundfont:
    # The work is in the fluidsynth subprocesses: threads are enough to run two at once.
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
      results = list(pool.map(_write_track, jobs))
  elif workers > 1:
    # Spawned workers: forking a process that already runs JAX threads is unsafe.
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn")) as pool:
      results = list(pool.map(_write_track, jobs))
  else:
    results = [_write_track(job) for job in jobs]
  meta = {"version": VERSION, "seed": seed, "tracks": tracks, "seconds": seconds,
          "sample_rate": sample_rate, "stems": list(STEMS), "layout": "stems",
          "source": source, "songs": dict(results)}
  if soundfont:
    meta.update(version=sf.VERSION, stems=list(sf.STEMS), soundfont=soundfont,
                fluidsynth=sf.fluidsynth_version(sf.find_fluidsynth()))
  with open(os.path.join(out_dir, "demo.json"), "w") as f:
    json.dump(meta, f, indent=1)
  return out_dir


def corpus_name(tracks: int, seconds: float, seed: int, sample_rate: int,
                soundfont: str | None = None) -> str:
  """The cache folder name: the settings, and for a soundfont corpus the soundfont (name, and
  a digest of its path, size and the FluidSynth version) and ``soundfont.VERSION``."""
  settings = f"seed{seed}-{tracks}x{seconds:g}s-{sample_rate}"
  if not soundfont:
    return f"demo-v{VERSION}-{settings}"
  key = json.dumps([os.path.realpath(soundfont), os.path.getsize(soundfont),
                    sf.fluidsynth_version(sf.find_fluidsynth())])
  digest = hashlib.sha1(key.encode()).hexdigest()[:8]
  name = os.path.splitext(os.path.basename(soundfont))[0]
  return f"demo-sf{sf.VERSION}-{name}-{digest}-{settings}"


def ensure_demo_corpus(cache_dir: str, tracks: int = 20, seconds: float = 12.0, seed: int = 0,
                       sample_rate: int = 44100, workers: int | None = None,
                       source: str = "auto", soundfont: str | None = None) -> str:
  """Path of a demo corpus with these settings under ``cache_dir``, generated on first use.

  ``source`` and ``soundfont`` as in ``resolve_source``; the folder name keys on what was
  resolved (see ``corpus_name``), so a synthesiser corpus is never reused for a soundfont
  request. Logs one line saying which source is used. Generation writes to a temporary
  folder renamed into place when complete, so an interrupted run or a concurrent process
  never leaves a partial corpus behind.
  """
  source, soundfont, message = resolve_source(source, soundfont)
  log.info(message)
  cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
  path = os.path.join(cache_dir, corpus_name(tracks, seconds, seed, sample_rate, soundfont))
  if os.path.isfile(os.path.join(path, "demo.json")):
    return path
  os.makedirs(cache_dir, exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  generate(tmp, tracks, seconds, seed, sample_rate, workers, source, soundfont)
  try:
    os.rename(tmp, path)
  except OSError:  # another process finished first
    shutil.rmtree(tmp, ignore_errors=True)
  return path


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m apollo_jax.data.demo",
                              description=__doc__.split("\n\n")[0])
  p.add_argument("out_dir")
  p.add_argument("--tracks", type=int, default=20)
  p.add_argument("--seconds", type=float, default=12.0)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--sample-rate", type=int, default=44100)
  p.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
  p.add_argument("--source", choices=SOURCES, default="auto",
                 help="soundfont: GM parts rendered by FluidSynth; synth: the built-in "
                      "synthesiser; auto (default): soundfont when available, else synth")
  p.add_argument("--soundfont", default=None,
                 help=f"a General MIDI .sf2 (default: {sf.TRAIN_SOUNDFONT} in "
                      f"{', '.join(sf.SEARCH_DIRS)})")
  args = p.parse_args(argv)
  try:
    source, soundfont, message = resolve_source(args.source, args.soundfont)
  except sf.SoundfontError as e:
    raise SystemExit(f"error: {e}") from None
  print(message, flush=True)
  start = time.time()
  generate(args.out_dir, args.tracks, args.seconds, args.seed, args.sample_rate, args.workers,
           source, soundfont)
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out_dir) for f in fs)
  print(f"wrote {args.tracks} tracks x {args.seconds:g} s ({source}) to "
        f"{args.out_dir}: {size / 1e6:.0f} MB in {time.time() - start:.0f} s")


if __name__ == "__main__":
  main()
