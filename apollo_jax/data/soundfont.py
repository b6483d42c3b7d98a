"""Demo music with real instrument timbres: procedurally composed General MIDI parts rendered
by FluidSynth from a GM soundfont, one stem per instrument.

A track is composed from its seed alone: tempo, metre, key, scale, chord progression, swing,
and an arrangement of 4-bar sections in which instruments drop out (so stems hold real
silence). Up to nine instruments play, each from a pool of GM programs of its family:

  drums    channel 10, one of the GM kits (standard, room, power, electronic, 808, jazz, brush)
  bass     acoustic, finger, pick, fretless, slap, synth basses
  keys     pianos, electric pianos, harpsichord, clavinet, organs, vibraphone
  guitar   nylon, steel, jazz, clean, muted, overdriven, distortion
  strings  violin, cello, ensembles, tremolo, pizzicato, harp, synth strings
  brass    trumpet, trombone, horn, brass section, synth brass
  winds    saxophones, oboe, bassoon, clarinet, flute, recorder, pan flute
  lead     synth leads, overdriven/distortion guitar
  vocals   choir aahs, voice oohs, synth voice, voice lead (named so that tools that look
           for a vocal stem find it)

Velocities, accents, articulation (note length), register, pan (CC10), expression (CC11),
reverb send (CC91) and sustain pedal (CC64) vary per part. Each instrument is written as its
own MIDI file with ``mido`` and rendered alone by the ``fluidsynth`` command line (float
output, so nothing clips before the levels are set). FluidSynth's reverb is ON, with a room
drawn per track; its chorus is OFF (it would add the same slow modulation to everything).

The output depends only on the seed, the track index, the length, the rate, the soundfont
file and the FluidSynth version (FluidSynth renders deterministically; the tests check
byte equality).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import subprocess
import tempfile

import numpy as np

from apollo_jax.data.sources import DataError

VERSION = 1  # bump when composition or rendering changes, so cached corpora are regenerated
STEMS = ("drums", "bass", "keys", "guitar", "strings", "brass", "winds", "lead", "vocals")
# The training soundfont (Debian/Ubuntu fluid-soundfont-gm, Fedora/Arch fluid-soundfont).
TRAIN_SOUNDFONT = "FluidR3_GM.sf2"
# The held-out soundfont (Debian timgm6mb-soundfont): a different sample set.
HELDOUT_SOUNDFONT = "TimGM6mb.sf2"
SEARCH_DIRS = ("/usr/share/sounds/sf2", "/usr/share/soundfonts", "/usr/local/share/soundfonts",
               "/usr/share/sf2", "/usr/local/share/sounds/sf2")

PROGRAMS = {  # GM program numbers (0-based) per family
    "bass": (32, 33, 34, 35, 36, 37, 38, 39),
    "keys": (0, 1, 2, 4, 5, 6, 7, 11, 16, 17, 18),
    "guitar": (24, 25, 26, 27, 28, 29, 30),
    "strings": (40, 42, 44, 45, 46, 48, 49, 50),
    "brass": (56, 57, 60, 61, 62, 63),
    "winds": (64, 65, 66, 68, 70, 71, 73, 74, 75),
    "lead": (80, 81, 82, 83, 84, 86, 29, 30),
    "vocals": (52, 53, 54, 85),
}
DRUM_KITS = (0, 8, 16, 24, 25, 32, 40)  # bank 128 presets
DRUM_CHANNEL = 9  # MIDI channel 10
LEVELS_DB = {"drums": 0.0, "bass": -2.0, "keys": -5.0, "guitar": -5.0, "strings": -7.0,
             "brass": -6.0, "winds": -6.0, "lead": -5.0, "vocals": -3.0}
# Share of the 4-bar sections an instrument plays in, when it is in the track at all.
DENSITY = {"drums": 0.8, "bass": 0.85, "keys": 0.75, "guitar": 0.7, "strings": 0.6,
           "brass": 0.45, "winds": 0.5, "lead": 0.5, "vocals": 0.6}
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11), "lydian": (0, 2, 4, 6, 7, 9, 11),
    "phrygian": (0, 1, 3, 5, 7, 8, 10), "melodic minor": (0, 2, 3, 5, 7, 9, 11),
}
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (5, 3, 0, 4), (0, 3, 4, 4), (0, 6, 5, 4),
                (1, 4, 0, 0), (0, 2, 3, 4), (5, 4, 3, 4), (0, 3, 0, 4), (0, 1, 3, 4))
TICKS = 480  # per beat; a sixteenth is TICKS // 4


@dataclasses.dataclass(frozen=True)
class Style:
  """The ranges a composition is drawn from. ``HELDOUT`` differs from ``TRAIN`` in metre,
  tempo, scales, progressions and swing, so held-out music is not just new seeds."""
  name: str
  bpm: tuple[float, float]
  beats_per_bar: tuple[int, ...]
  scales: tuple[str, ...]
  progressions: tuple[int, ...]  # indices into PROGRESSIONS
  swing: tuple[float, ...]


TRAIN = Style("train", (76.0, 150.0), (4,), ("major", "minor", "dorian", "mixolydian",
              "harmonic minor"), tuple(range(8)), (0.0, 0.0, 0.12, 0.25))
HELDOUT = Style("heldout", (58.0, 176.0), (3, 4, 4), ("lydian", "phrygian", "melodic minor",
                "major", "minor"), (1, 4, 6, 8, 9), (0.0, 0.0, 0.08, 0.33))


class SoundfontError(DataError):
  """FluidSynth or the soundfont is missing or failed (a ``DataError``: training reports it
  in one line)."""


def find_fluidsynth() -> str | None:
  return shutil.which("fluidsynth")


def find_soundfont(name: str = TRAIN_SOUNDFONT) -> str | None:
  """The first ``SEARCH_DIRS/<name>`` that exists, else None."""
  for folder in SEARCH_DIRS:
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return path
  return None


@functools.lru_cache(maxsize=None)
def fluidsynth_version(binary: str) -> str:
  out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
  first = (out.stdout or out.stderr).strip().splitlines()
  return first[0].split()[-1] if first else "unknown"


def check_soundfont(soundfont: str, binary: str | None = None) -> tuple[str, str]:
  """``(fluidsynth binary, absolute soundfont path)``, or a SoundfontError saying what is
  missing and how to install it."""
  binary = binary or find_fluidsynth()
  if binary is None:
    raise SoundfontError("the soundfont demo corpus needs the `fluidsynth` command, which is "
                         "not on PATH (Debian/Ubuntu: apt-get install fluidsynth "
                         "fluid-soundfont-gm; or use --source synth)")
  if not soundfont or not os.path.isfile(soundfont):
    raise SoundfontError(f"soundfont {soundfont!r} not found (expected a General MIDI .sf2 "
                         f"file, e.g. {SEARCH_DIRS[0]}/{TRAIN_SOUNDFONT} from Debian's "
                         "fluid-soundfont-gm; or use --source synth)")
  return binary, os.path.abspath(soundfont)


class Composition:
  """The musical plan of one track: tempo, metre, key, harmony, instruments, arrangement.

  Times are MIDI ticks (``TICKS`` per beat); a bar has ``steps`` sixteenths.
  """

  def __init__(self, rng: np.random.Generator, seconds: float, style: Style,
               programs: dict[str, tuple[int, ...]] | None = None):
    self.rng = rng
    programs = programs or PROGRAMS
    self.bpm = float(rng.uniform(*style.bpm))
    self.beats = int(rng.choice(style.beats_per_bar))
    self.steps = 4 * self.beats
    self.swing = float(rng.choice(style.swing))
    self.key = int(rng.integers(12))
    self.scale_name = str(rng.choice(style.scales))
    self.scale = SCALES[self.scale_name]
    self.progression = PROGRESSIONS[int(rng.choice(style.progressions))]
    self.bars_per_chord = int(rng.choice([1, 1, 2]))
    self.total_ticks = int(np.ceil(seconds * self.bpm / 60 * TICKS))
    self.bars = self.total_ticks // (self.steps * TICKS // 4) + 1
    sections = (self.bars + 3) // 4
    # Instruments: usually drums and bass, then three to six of the others.
    others = [s for s in STEMS[2:] if programs.get(s)]
    chosen = list(rng.choice(others, size=min(len(others), int(rng.integers(3, 7))),
                             replace=False))
    if rng.random() < 0.9:
      chosen.append("drums")
    if rng.random() < 0.9 and programs.get("bass"):
      chosen.append("bass")
    self.instruments = [s for s in STEMS if s in chosen]
    self.programs = {s: (int(rng.choice(programs.get("drums", DRUM_KITS))) if s == "drums"
                         else int(rng.choice(programs[s]))) for s in self.instruments}
    self.plays = {}
    for stem in self.instruments:
      on = rng.random(sections) < DENSITY[stem]
      if stem == "drums" and sections > 2:
        on[0] = rng.random() < 0.4  # often an intro without drums
      on[int(rng.integers(1 if stem == "drums" and sections > 2 else 0, sections))] = True
      self.plays[stem] = on
    self.reverb = {"room-size": round(float(rng.uniform(0.1, 0.8)), 3),
                   "damp": round(float(rng.uniform(0.0, 0.6)), 3),
                   "width": round(float(rng.uniform(0.3, 1.0)), 3),
                   "level": round(float(rng.uniform(0.5, 0.9)), 3)}

  def tick(self, bar: int, step: float, jitter: float = 3.0) -> int:
    """Onset of sixteenth ``step`` of ``bar``, swung and humanised by ``jitter`` ticks."""
    swing = self.swing if int(step) % 2 else 0.0
    t = (bar * self.steps + step + swing) * (TICKS // 4) + self.rng.normal(0, jitter)
    return max(0, int(round(t)))

  def playing(self, stem: str, bar: int) -> bool:
    return bool(self.plays[stem][bar // 4])

  def degree(self, bar: int) -> int:
    return self.progression[(bar // self.bars_per_chord) % len(self.progression)]

  def note(self, degree: int, base: int) -> int:
    """MIDI note of scale ``degree`` (any integer) above the key's C at or below ``base``."""
    octave, d = divmod(degree, len(self.scale))
    return base - base % 12 + self.key + self.scale[d] + 12 * octave

  def chord(self, bar: int, base: int, size: int = 3) -> list[int]:
    degree = self.degree(bar)
    return [self.note(degree + 2 * i, base) for i in range(size)]


@dataclasses.dataclass(frozen=True)
class Engine:
  """What renders MIDI: ``fluidsynth`` with an .sf2 ``bank``, or ``timidity`` with a config
  file ``bank`` (e.g. freepats' GUS patches). ``programs`` restricts the GM programs per
  family to those the bank has (None: all of ``PROGRAMS``)."""
  kind: str
  binary: str
  bank: str
  name: str
  programs: dict | None = None


def fluidsynth_engine(soundfont: str | None = None, binary: str | None = None) -> Engine:
  binary, soundfont = check_soundfont(soundfont or find_soundfont() or "", binary)
  return Engine("fluidsynth", binary, soundfont, os.path.splitext(os.path.basename(soundfont))[0])


FREEPATS_CONFIGS = ("/etc/timidity/freepats.cfg", "/usr/share/midi/freepats/freepats.cfg")


def freepats_engine() -> Engine | None:
  """TiMidity++ with freepats (recorded-instrument GUS patches), when both are installed;
  the programs are limited to the patches freepats has (it lacks many GM programs)."""
  binary = shutil.which("timidity")
  config = next((c for c in FREEPATS_CONFIGS if os.path.isfile(c)), None)
  if binary is None or config is None:
    return None
  available, bank = set(), None
  with open(config, errors="replace") as f:
    for line in f:
      words = line.split("#")[0].split()
      if len(words) >= 2 and words[0] in ("bank", "drumset"):
        bank = (words[0], words[1])
      elif bank == ("bank", "0") and len(words) >= 2 and words[0].isdigit():
        available.add(int(words[0]))
  programs = {family: tuple(p for p in pool if p in available)
              for family, pool in PROGRAMS.items()}
  programs["drums"] = (0,)
  return Engine("timidity", binary, config, "freepats", programs)


@dataclasses.dataclass
class Part:
  """One instrument's MIDI: notes ``(tick, length, pitch, velocity)`` and controller changes
  ``(tick, control, value)``."""
  channel: int
  program: int
  notes: list = dataclasses.field(default_factory=list)
  controls: list = dataclasses.field(default_factory=list)

  def add(self, tick: int, length: int, pitch: int, velocity: float) -> None:
    if 0 <= pitch <= 127 and length > 0:
      self.notes.append((int(tick), int(length), int(pitch), int(np.clip(velocity, 1, 127))))


def _setup(part: Part, rng, pan_range=(20, 108), reverb=(15, 70)) -> None:
  part.controls += [(0, 7, 100), (0, 10, int(rng.integers(*pan_range))),
                    (0, 91, int(rng.integers(*reverb))), (0, 93, 0), (0, 11, 127)]


def _section_expression(part: Part, comp: Composition) -> None:
  for bar in range(0, comp.bars, 4):
    part.controls.append((comp.tick(bar, 0, 0), 11, int(comp.rng.integers(90, 128))))


def _new_part(comp: Composition, stem: str, pan_range=(20, 108), reverb=(15, 70),
              expression: bool = True) -> Part:
  """A part on the stem's program with its mixer controls and, unless ``expression`` is
  False, an expression level per 4-bar section."""
  part = Part(DRUM_CHANNEL if stem == "drums" else 0, comp.programs[stem])
  _setup(part, comp.rng, pan_range, reverb)
  if expression:
    _section_expression(part, comp)
  return part


def drums(comp: Composition) -> Part:
  rng, steps = comp.rng, comp.steps
  part = _new_part(comp, "drums", (54, 74), (10, 45), expression=False)
  if comp.beats == 3:
    kick, snare = [0], [[4, 8], [8], [6]][int(rng.integers(3))]
  else:
    kick, snare = [([0, 8], [4, 12]), ([0, 6, 8], [4, 12]), ([0, 7, 10], [4, 12]),
                   ([0, 4, 8, 12], [4, 12]), ([0, 10], [8]), ([0, 3, 8, 11], [4, 12])][
                       int(rng.integers(6))]
  hat_note = int(rng.choice([42, 42, 42, 44, 51]))  # closed hat, pedal hat, ride
  hat_steps = [range(0, steps, 2), range(steps), range(0, steps, 4)][int(rng.integers(3))]
  snare_note = int(rng.choice([38, 38, 40, 39]))  # acoustic/electric snare, clap
  shaker = rng.random() < 0.3
  vel = float(rng.uniform(80, 115))
  for bar in range(comp.bars):
    if not comp.playing("drums", bar):
      continue
    fill = bar % 4 == 3 and rng.random() < 0.5
    if bar % 4 == 0 or not comp.playing("drums", max(bar - 1, 0)):
      part.add(comp.tick(bar, 0), 120, int(rng.choice([49, 57])), vel * rng.uniform(0.8, 1.0))
    for s in kick:
      part.add(comp.tick(bar, s), 120, 36, vel * rng.uniform(0.85, 1.05))
    for s in snare:
      if not (fill and s >= steps - 4):
        part.add(comp.tick(bar, s), 120, snare_note, vel * rng.uniform(0.85, 1.0))
    if rng.random() < 0.5:  # ghost note
      part.add(comp.tick(bar, int(rng.integers(steps))), 60, 38, vel * 0.3)
    for s in hat_steps:
      if fill and s >= steps - 4:
        continue
      open_hat = s % 8 == 6 and rng.random() < 0.25
      accent = 1.0 if s % 4 == 0 else 0.7
      part.add(comp.tick(bar, s), 60, 46 if open_hat else hat_note,
               vel * accent * rng.uniform(0.7, 1.0))
    if shaker:
      for s in range(steps):
        part.add(comp.tick(bar, s), 60, int(rng.choice([54, 70])),
                 vel * (0.6 if s % 2 else 0.45) * rng.uniform(0.7, 1.0))
    if fill:  # toms down the kit, or a snare roll
      toms = [50, 48, 47, 45, 43, 41] if rng.random() < 0.6 else [38] * 6
      for i, s in enumerate(range(steps - 4, steps)):
        part.add(comp.tick(bar, s), 60, toms[min(i + int(rng.integers(2)), 5)],
                 vel * rng.uniform(0.8, 1.0))
  return part


def bass(comp: Composition) -> Part:
  rng, steps = comp.rng, comp.steps
  part = _new_part(comp, "bass", (56, 72), (0, 25))
  base = int(rng.integers(28, 41))
  pattern = [[0, 8], [0, 4, 8, 12], [0, 3, 6, 8, 11, 14], list(range(0, 16, 2)),
             [0, 2, 3, 8, 10]][int(rng.integers(5))]
  pattern = [s for s in pattern if s < steps] or [0]
  legato = float(rng.uniform(0.5, 0.98))
  vel = float(rng.uniform(70, 110))
  for bar in range(comp.bars):
    if not comp.playing("bass", bar):
      continue
    root = comp.chord(bar, base)[0]
    for i, s in enumerate(pattern):
      note = root + (12 if rng.random() < 0.12 else 0)
      note += 7 if i % 4 == 3 and rng.random() < 0.3 else 0
      length = (pattern[i + 1] if i + 1 < len(pattern) else steps) - s
      part.add(comp.tick(bar, s), length * 120 * legato, note,
               vel * (1.0 if s % 4 == 0 else 0.85) * rng.uniform(0.85, 1.05))
  return part


def _voicing(comp: Composition, bar: int, base: int, size: int) -> list[int]:
  """A chord voiced upward from ``base``, sometimes inverted."""
  notes = comp.chord(bar, base, size)
  inversion = int(comp.rng.integers(0, 3))
  return sorted(n + 12 * (i < inversion) for i, n in enumerate(notes))


def keys(comp: Composition) -> Part:
  rng, steps = comp.rng, comp.steps
  part = _new_part(comp, "keys")
  base = int(rng.integers(50, 62))
  mode = str(rng.choice(["block", "arpeggio", "offbeat"]))
  size = int(rng.choice([3, 4]))
  pedal = part.program in (0, 1, 2, 4, 5) and mode != "offbeat" and rng.random() < 0.7
  vel = float(rng.uniform(55, 100))
  for bar in range(comp.bars):
    if not comp.playing("keys", bar):
      continue
    chord = _voicing(comp, bar, base, size)
    if pedal:  # pedal down for the bar, lifted just before the next
      part.controls += [(comp.tick(bar, 0, 0) + 10, 64, 127),
                        (comp.tick(bar + 1, 0, 0) - 10, 64, 0)]
    if mode == "arpeggio":
      order = chord + [chord[1] + 12] if rng.random() < 0.5 else chord + chord[::-1][1:]
      for i, s in enumerate(range(0, steps, 2)):
        part.add(comp.tick(bar, s), 220, order[i % len(order)], vel * rng.uniform(0.8, 1.05))
    elif mode == "block":
      hits = [s for s in (0, 6, 8, 14) if s < steps and (s == 0 or rng.random() < 0.6)]
      for j, s in enumerate(hits):
        end = hits[j + 1] if j + 1 < len(hits) else steps
        for n in chord + ([chord[0] - 12] if rng.random() < 0.5 else []):
          part.add(comp.tick(bar, s), (end - s) * 120 * 0.9, n, vel * rng.uniform(0.8, 1.0))
    else:
      for s in range(2, steps, 4):
        for n in chord:
          part.add(comp.tick(bar, s), 100, n, vel * rng.uniform(0.75, 1.0))
  return part


def guitar(comp: Composition) -> Part:
  rng, steps = comp.rng, comp.steps
  part = _new_part(comp, "guitar")
  program = part.program
  distorted = program in (29, 30)
  mode = "power" if distorted else str(rng.choice(["strum", "pick", "funk" if program == 28
                                                   else "strum"]))
  base = int(rng.integers(40, 50))
  vel = float(rng.uniform(60, 105))
  strum_steps = [[0, 2, 4, 6, 8, 10, 12, 14], [0, 3, 6, 8, 10, 12, 14], [0, 6, 8, 10, 14],
                 [0, 4, 8, 12]][int(rng.integers(4))]
  strum_steps = [s for s in strum_steps if s < steps]
  for bar in range(comp.bars):
    if not comp.playing("guitar", bar):
      continue
    root = comp.chord(bar, base)[0]
    if mode == "power":
      mute = rng.random() < 0.5
      for s in range(0, steps, 2):
        for n in (root, root + 7, root + 12):
          part.add(comp.tick(bar, s), 90 if mute else 230, n, vel * rng.uniform(0.85, 1.05))
    elif mode == "pick":
      chord = _voicing(comp, bar, base + 7, 3) + [root + 12]
      for i, s in enumerate(range(0, steps, 2)):
        note = root if i == 0 else chord[(i - 1) % len(chord)]
        part.add(comp.tick(bar, s), 400, note, vel * rng.uniform(0.75, 1.0))
    else:  # strum: six strings, staggered, down on the beat and up off it
      strings = sorted({root, root + 7, root + 12} | set(_voicing(comp, bar, root + 12, 3)))
      length = 60 if mode == "funk" else 220
      for j, s in enumerate(strum_steps):
        order = strings if s % 4 == 0 else strings[::-1][:4]
        start = comp.tick(bar, s)
        spread = int(rng.integers(6, 20))
        for k, n in enumerate(order):
          part.add(start + k * spread, length, n, vel * (1.0 if s % 4 == 0 else 0.75)
                   * rng.uniform(0.8, 1.0))
  return part


def _melody(comp: Composition, part: Part, stem: str, base: int, lengths, rest: float,
            legato: float, vel: float, vibrato: bool = False) -> None:
  """A random walk over the scale that leans on chord tones at bar starts."""
  rng, steps = comp.rng, comp.steps
  degree = 0
  for bar in range(comp.bars):
    if not comp.playing(stem, bar):
      continue
    s = int(rng.integers(0, 3)) if rng.random() < 0.3 else 0
    while s < steps:
      length = min(int(rng.choice(lengths)), steps - s)
      if rng.random() >= rest:
        if s == 0 and rng.random() < 0.6:
          degree = comp.degree(bar) + 2 * int(rng.integers(0, 3))
        else:
          degree += int(rng.choice([-2, -1, -1, 1, 1, 2, 3, -3]))
        degree = int(np.clip(degree, -3, 10))
        start = comp.tick(bar, s)
        part.add(start, length * 120 * legato, comp.note(degree, base),
                 vel * (1.0 if s % 4 == 0 else 0.85) * rng.uniform(0.8, 1.05))
        if vibrato and length >= 6:  # modulation wheel in after the attack
          part.controls += [(start + 240, 1, int(rng.integers(30, 80))),
                            (start + length * 120 - 10, 1, 0)]
      s += length


def strings(comp: Composition) -> Part:
  rng, steps = comp.rng, comp.steps
  part = _new_part(comp, "strings", expression=False)  # added below where it applies
  program = part.program
  vel = float(rng.uniform(60, 100))
  if program in (40, 42):  # solo violin/cello: a slow line
    base = 67 if program == 40 else 48
    _section_expression(part, comp)
    _melody(comp, part, "strings", base, [4, 8, 8, 12], 0.15, 0.98, vel, vibrato=True)
    return part
  base = int(rng.integers(52, 62))
  for bar in range(comp.bars):
    if not comp.playing("strings", bar):
      continue
    chord = _voicing(comp, bar, base, 4)
    if program == 45:  # pizzicato on the beats
      for s in range(0, steps, 4):
        for n in chord[:3]:
          part.add(comp.tick(bar, s), 100, n, vel * rng.uniform(0.8, 1.0))
    elif program == 46:  # harp: rolled arpeggio up two octaves
      notes = chord + [n + 12 for n in chord]
      for i, s in enumerate(range(0, steps, 1 if rng.random() < 0.5 else 2)):
        part.add(comp.tick(bar, s), 480, notes[i % len(notes)], vel * rng.uniform(0.7, 1.0))
    elif bar % comp.bars_per_chord == 0:  # sustained chord with an expression swell
      length = comp.bars_per_chord * steps * 120
      start = comp.tick(bar, 0, 0)
      for n in chord + [chord[0] - 12]:
        part.add(start, length - 20, n, vel * rng.uniform(0.85, 1.0))
      low, high = int(rng.integers(50, 90)), int(rng.integers(100, 128))
      for k in range(9):
        value = low + (high - low) * np.sin(np.pi * k / 8) ** 2 * (rng.random() < 0.7)
        part.controls.append((start + k * length // 8, 11, int(value)))
  return part


def brass(comp: Composition) -> Part:
  rng, steps = comp.rng, comp.steps
  part = _new_part(comp, "brass")
  program = part.program
  vel = float(rng.uniform(65, 115))
  base = {56: 60, 57: 48, 60: 53}.get(program, int(rng.integers(52, 60)))
  if program in (56, 57, 60) and rng.random() < 0.5:
    _melody(comp, part, "brass", base, [2, 4, 4, 6, 8], 0.3, 0.9, vel, vibrato=True)
    return part
  hits = [[0, 6, 12], [3, 6, 10], [0, 10], [6, 14], [0, 4, 7]][int(rng.integers(5))]
  hits = [s for s in hits if s < steps]
  stab = rng.random() < 0.6
  for bar in range(comp.bars):
    if not comp.playing("brass", bar):
      continue
    chord = _voicing(comp, bar, base, 3)
    for s in hits:
      length = 90 if stab else 360
      for n in chord:
        part.add(comp.tick(bar, s), length, n, vel * rng.uniform(0.85, 1.05))
  return part


def winds(comp: Composition) -> Part:
  rng = comp.rng
  part = _new_part(comp, "winds")
  program = part.program
  base = {66: 55, 70: 43, 64: 67, 73: 72, 74: 72, 75: 72}.get(program, 62)
  _melody(comp, part, "winds", base, [2, 2, 4, 4, 6, 8], 0.35,
          float(rng.uniform(0.6, 0.98)), float(rng.uniform(60, 105)), vibrato=True)
  return part


def lead(comp: Composition) -> Part:
  rng = comp.rng
  part = _new_part(comp, "lead", (40, 88))
  _melody(comp, part, "lead", int(rng.integers(60, 74)), [1, 2, 2, 2, 4, 4, 6], 0.25,
          float(rng.uniform(0.5, 0.95)), float(rng.uniform(70, 110)), vibrato=True)
  return part


def vocals(comp: Composition) -> Part:
  rng, steps = comp.rng, comp.steps
  part = _new_part(comp, "vocals", (44, 84))
  vel = float(rng.uniform(70, 110))
  base = int(rng.choice([55, 60, 64]))
  if part.program in (52, 53) and rng.random() < 0.4:  # choir chords
    for bar in range(comp.bars):
      if comp.playing("vocals", bar) and bar % comp.bars_per_chord == 0:
        for n in _voicing(comp, bar, base, 3):
          part.add(comp.tick(bar, 0), comp.bars_per_chord * steps * 120 - 60, n,
                   vel * rng.uniform(0.85, 1.0))
    return part
  _melody(comp, part, "vocals", base, [2, 3, 4, 4, 6, 8], 0.2, 0.95, vel, vibrato=True)
  return part


MAKERS = {"drums": drums, "bass": bass, "keys": keys, "guitar": guitar, "strings": strings,
          "brass": brass, "winds": winds, "lead": lead, "vocals": vocals}


def midi_file(part: Part, bpm: float, total_ticks: int):
  """``part`` as a one-track MIDI file that ends at ``total_ticks``."""
  import mido  # here, so the synthesiser works in an environment without it
  events = [(t, 1, mido.Message("control_change", channel=part.channel, control=c, value=v))
            for t, c, v in part.controls if t < total_ticks]
  for t, length, pitch, velocity in part.notes:
    if t < total_ticks:
      events.append((t, 2, mido.Message("note_on", channel=part.channel, note=pitch,
                                        velocity=velocity)))
      events.append((min(t + length, total_ticks), 0, mido.Message(
          "note_off", channel=part.channel, note=pitch, velocity=64)))
  events.sort(key=lambda e: (e[0], e[1]))  # note-offs before note-ons at the same tick
  track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0),
                          mido.Message("program_change", channel=part.channel,
                                       program=part.program, time=0)])
  now = 0
  for t, _, msg in events:
    track.append(msg.copy(time=t - now))
    now = t
  track.append(mido.MetaMessage("end_of_track", time=max(0, total_ticks - now)))
  out = mido.MidiFile(type=0, ticks_per_beat=TICKS)
  out.tracks.append(track)
  return out


def render(midi_path: str, engine: Engine, rate: int, samples: int, reverb: dict) -> np.ndarray:
  """One MIDI file through ``engine``: ``(channels=2, samples)`` float32, cut or padded to
  ``samples``. FluidSynth: reverb on with the given room, chorus off, gain 0.5, float
  output. TiMidity++: its default effects, 16-bit WAV output."""
  if engine.kind == "fluidsynth":
    out = midi_path[:-4] + ".raw"
    cmd = [engine.binary, "-ni", "-q", "-g", "0.5", "-r", str(rate), "-R", "1", "-C", "0",
           "-o", "synth.cpu-cores=1", "-T", "raw", "-O", "float", "-E", "little", "-F", out]
    for key, value in reverb.items():
      cmd += ["-o", f"synth.reverb.{key}={value}"]
    cmd += [engine.bank, midi_path]
  else:
    out = midi_path[:-4] + ".wav"
    cmd = [engine.binary, "-c", engine.bank, "-Ow", "--output-stereo", "--output-16bit",
           "-s", str(rate), "-A", "100", "-o", out, midi_path]
  result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
  if result.returncode != 0 or not os.path.isfile(out):
    raise SoundfontError(f"{engine.kind} failed on {midi_path} (exit {result.returncode}): "
                         f"{(result.stderr or result.stdout).strip()[-500:]}")
  if engine.kind == "fluidsynth":
    x = np.fromfile(out, dtype="<f4")
    x = x[:x.size // 2 * 2].reshape(-1, 2).T
  else:
    import soundfile
    x = soundfile.read(out, dtype="float32", always_2d=True)[0].T
  os.remove(out)
  x = x[:, :samples]
  return np.pad(x, ((0, 0), (0, samples - x.shape[1]))).astype(np.float32)


def active_rms(x: np.ndarray, rate: int) -> float:
  """RMS of ``x (channels, samples)`` over its 50 ms frames within 40 dB of the loudest
  frame, so that a stem's silent sections do not make it louder when levels are set."""
  frame = max(1, int(0.05 * rate))
  n = x.shape[-1] // frame * frame
  if n == 0:
    return float(np.sqrt(np.mean(x ** 2)))
  power = np.mean(x[:, :n].reshape(x.shape[0], -1, frame) ** 2, axis=(0, 2))
  active = power[power >= power.max() * 1e-4]
  return float(np.sqrt(np.mean(active))) if active.size else 0.0


def compose(seed: int, index: int, seconds: float, style: Style = TRAIN,
            programs: dict | None = None) -> tuple[Composition, dict[str, Part]]:
  rng = np.random.default_rng([seed, index, VERSION, 7])
  comp = Composition(rng, seconds, style, programs)
  return comp, {stem: MAKERS[stem](comp) for stem in comp.instruments}


def synthesize(seed: int, index: int, seconds: float, rate: int = 44100,
               soundfont: str | None = None, style: Style = TRAIN,
               engine: Engine | None = None) -> tuple[dict[str, np.ndarray], dict]:
  """Track ``index`` of corpus ``seed``: ``({stem: (channels=2, samples) float32},
  description)``, one stem per instrument the composition uses. Stems are set to their
  level in ``LEVELS_DB`` (+-3 dB, by active RMS), then all scaled by one factor so that the
  mixture peaks at -1 dBFS and no stem above 0.99. ``engine`` (default: FluidSynth with
  ``soundfont``) renders."""
  engine = engine or fluidsynth_engine(soundfont)
  comp, parts = compose(seed, index, seconds, style, engine.programs)
  samples = int(seconds * rate)
  stems, gains = {}, {}
  with tempfile.TemporaryDirectory(prefix="apollo-sf-") as tmp:
    for stem, part in parts.items():
      path = os.path.join(tmp, f"{stem}.mid")
      midi_file(part, comp.bpm, comp.total_ticks).save(path)
      x = render(path, engine, rate, samples, comp.reverb)
      rms = active_rms(x, rate)
      if rms <= 1e-7:  # nothing audible (a program the soundfont lacks): leave it out
        continue
      gain_db = LEVELS_DB[stem] + float(comp.rng.uniform(-3, 3)) - 20 - 20 * np.log10(rms)
      stems[stem], gains[stem] = x * 10 ** (gain_db / 20), gain_db
  if not stems:
    raise SoundfontError(f"{engine.bank} rendered only silence for track {index} of seed {seed}")
  mixture = sum(stems.values())
  scale = 10 ** (-1 / 20) / max(float(np.abs(mixture).max()), 1e-9)
  scale = min(scale, 0.99 / max(float(np.abs(s).max()) for s in stems.values()))
  stems = {k: (v * scale).astype(np.float32) for k, v in stems.items()}
  db = lambda v: round(20 * float(np.log10(max(v, 1e-12))), 2)  # noqa: E731
  description = {
      "source": "soundfont", "renderer": engine.kind, "soundfont": os.path.basename(engine.bank),
      "style": style.name,
      "bpm": round(comp.bpm, 2), "beats_per_bar": comp.beats, "key": comp.key,
      "scale": comp.scale_name, "progression": list(comp.progression), "swing": comp.swing,
      "reverb": comp.reverb, "programs": {s: comp.programs[s] for s in stems},
      "sections": {s: [bool(b) for b in comp.plays[s]] for s in stems},
      "levels": {s: {"gain_db": round(gains[s] + 20 * np.log10(scale), 2),
                     "active_rms_dbfs": db(active_rms(x, rate)),
                     "peak_dbfs": db(float(np.abs(x).max()))} for s, x in stems.items()},
      "mixture_peak_dbfs": db(float(np.abs(sum(stems.values())).max())),
  }
  return stems, description
