"""Training pairs from stems (paper III-A): crop, mix, degrade with a codec, rescale.

All functions are pure NumPy given a ``np.random.Generator``: the same generator state gives
the same item. Audio is float32 ``(channels, samples)``; files are read a segment at a time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from apollo_jax import audio
from apollo_jax.data import codecs
from apollo_jax.data.sources import DataError

# Mixes are brought to this peak before the codec, like mastered music: LAME's
# psychoacoustic model depends on the absolute level, so the level must be realistic.
PRE_CODEC_PEAK = 10 ** (-1 / 20)
# Width of the raised-cosine roll-off of a band-limited source (``band_limit``).
BAND_LIMIT_TRANSITION_HZ = 1000.0
ACTIVITY_FRAME_SECONDS = 0.05
log = logging.getLogger(__name__)


class UnreadableFile(audio.AudioError):
  """A file that passed the scan but failed to read; ``path`` names it."""

  def __init__(self, path: str, message: str):
    super().__init__(message)
    self.path = path


@dataclasses.dataclass(frozen=True)
class MixSpec:
  """The mixing and degradation settings of ``default_data_config()``, as plain values."""
  sample_rate: int
  channels: int
  segment_seconds: float
  max_stems: int
  p_mixture: float
  gain_db: tuple[float, float]
  activity_threshold_db: float
  activity_min_fraction: float
  max_crop_tries: int
  codecs: tuple[str, ...]
  bitrates: tuple[int, ...]
  mp3_quality: int
  # Not in the published recipe (0 leaves the random stream as it was): see band_limit.
  p_band_limit: float = 0.0
  band_limit_hz: tuple[float, float] = (8000.0, 20000.0)

  def __post_init__(self):
    for c in self.codecs:
      if c not in codecs.CODECS:
        raise DataError(f"unknown codec {c!r} in data config codecs; expected {codecs.CODECS}")
    if not self.codecs or not self.bitrates:
      raise DataError("data config needs at least one codec and one bitrate")
    if self.max_stems < 1:
      raise DataError(f"max_stems must be >= 1, got {self.max_stems}")
    if self.channels not in (1, 2):
      raise DataError(f"channels must be 1 or 2, got {self.channels}")

  @classmethod
  def from_config(cls, cfg, segment_seconds: float | None = None) -> "MixSpec":
    """From a data ConfigDict; ``segment_seconds`` overrides the config's (validation)."""
    names = [f.name for f in dataclasses.fields(cls)]
    # Fields added later keep their defaults for configs saved before them (resume).
    values = {n: cfg[n] for n in names if n in cfg}
    if segment_seconds is not None:
      values["segment_seconds"] = segment_seconds
    values["gain_db"] = tuple(float(g) for g in values["gain_db"])
    if "band_limit_hz" in values:
      values["band_limit_hz"] = tuple(float(f) for f in values["band_limit_hz"])
    values["codecs"] = tuple(values["codecs"])
    values["bitrates"] = tuple(int(b) for b in values["bitrates"])
    return cls(**values)

  @property
  def segment(self) -> int:
    return int(round(self.segment_seconds * self.sample_rate))


def to_channels(x: np.ndarray, channels: int) -> np.ndarray:
  """Mono is duplicated; more channels than wanted keep the first ones (or average to mono)."""
  if x.shape[0] == channels:
    return x
  if channels == 1:
    return x.mean(axis=0, keepdims=True)
  if x.shape[0] == 1:
    return np.repeat(x, channels, axis=0)
  return x[:channels]


# Larger samples are no audio (float32 garbage near 3.4e38): mixing up to max_stems of them
# with gains, or squaring them for the activity check, would overflow to inf. Such files are
# skipped like unreadable ones (logged once, counted in ``bad``).
MAX_ABS_SAMPLE = 1e15


def read_segment(files: list[dict[str, Any]], start_seconds: float, spec: MixSpec) -> np.ndarray:
  """Sum of ``files`` from ``start_seconds``, ``(spec.channels, spec.segment)`` at the model rate.

  Only the needed frames are read (soundfile seeks); stems at other rates are resampled.

  Raises:
    UnreadableFile: a file cannot be read, or holds samples beyond ``MAX_ABS_SAMPLE``.
  """
  out = None
  for f in files:
    start = int(start_seconds * f["rate"])
    frames = math.ceil(spec.segment_seconds * f["rate"]) + 1
    try:
      x, _ = audio.load(f["path"], spec.sample_rate, start=start, frames=frames)
    except audio.AudioError as e:
      raise UnreadableFile(f["path"], str(e)) from None
    peak = max(float(x.max()), -float(x.min())) if x.size else 0.0  # max |x|, no temporary
    if peak > MAX_ABS_SAMPLE:  # finite, but gains and sums would overflow float32 to inf
      raise UnreadableFile(f["path"], f"samples reach {peak:.3g}, far outside audio range")
    x = audio.fit_length(to_channels(x, spec.channels), spec.segment)
    if out is None:
      out = x
    else:
      out += x  # In place: both are this function's own arrays (saves an allocation per file).
  return np.zeros((spec.channels, spec.segment), np.float32) if out is None else out


def active_fraction(x: np.ndarray, sample_rate: int, threshold_db: float) -> float:
  """Fraction of 50 ms frames whose RMS (over channels) is above ``threshold_db`` dBFS."""
  hop = max(1, int(ACTIVITY_FRAME_SECONDS * sample_rate))
  frames = x.shape[1] // hop
  if frames == 0:
    return 0.0
  power = np.mean(np.square(x[:, :frames * hop].reshape(x.shape[0], frames, hop)), axis=(0, 2))
  return float(np.mean(power > 10 ** (threshold_db / 10)))


def active_crop(files: list[dict[str, Any]], seconds: float, rng: np.random.Generator,
                spec: MixSpec) -> np.ndarray:
  """A random crop of ``files`` that is active; the most active of the tries otherwise."""
  best, best_fraction = None, -1.0
  for _ in range(max(1, spec.max_crop_tries)):
    start = rng.uniform(0, max(0.0, seconds - spec.segment_seconds))
    x = read_segment(files, start, spec)
    fraction = active_fraction(x, spec.sample_rate, spec.activity_threshold_db)
    if fraction >= spec.activity_min_fraction:
      return x
    if fraction > best_fraction:
      best, best_fraction = x, fraction
  return best


def _mixture_files(track: dict[str, Any]) -> list[dict[str, Any]]:
  return track["mixture"] or [f for files in track["stems"].values() for f in files]


def mix(tracks: list[dict[str, Any]], first: int, rng: np.random.Generator,
        spec: MixSpec) -> tuple[np.ndarray, int]:
  """Clean music ``(channels, segment)`` and the number of stems summed (0: a mixture).

  With probability ``p_mixture`` the mixture of ``tracks[first]``; otherwise 1..max_stems
  stems, the first from ``tracks[first]`` and the others from other random tracks (all
  different while there are enough), each with a random gain in ``gain_db``.
  """
  track = tracks[first]
  if rng.random() < spec.p_mixture or not track["stems"]:
    return active_crop(_mixture_files(track), track["seconds"], rng, spec), 0
  count = int(rng.integers(1, spec.max_stems + 1))
  others = [int(i) for i in rng.permutation(len(tracks)) if i != first] or [first]
  out = np.zeros((spec.channels, spec.segment), np.float32)
  for i in range(count):
    t = track if i == 0 else tracks[others[(i - 1) % len(others)]]
    names = sorted(t["stems"])
    files = t["stems"][names[int(rng.integers(len(names)))]] if names else _mixture_files(t)
    gain = 10 ** (rng.uniform(*spec.gain_db) / 20)
    crop = active_crop(files, t["seconds"], rng, spec)
    crop *= gain  # In place: a fresh array; float32 like gain * crop (same values).
    out += crop
  return out, count


def band_limit(x: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
  """``x (channels, samples)`` with nothing above ``cutoff_hz`` (raised-cosine roll-off of
  ``BAND_LIMIT_TRANSITION_HZ`` below it), as a source recorded or sampled without a high band."""
  freqs = np.fft.rfftfreq(x.shape[-1], 1 / sample_rate)
  ramp = np.clip((cutoff_hz - freqs) / BAND_LIMIT_TRANSITION_HZ, 0.0, 1.0)
  gain = 0.5 - 0.5 * np.cos(np.pi * ramp)
  return np.fft.irfft(np.fft.rfft(x, axis=-1) * gain, n=x.shape[-1], axis=-1).astype(np.float32)


def degrade_pair(clean: np.ndarray, rng: np.random.Generator,
                 spec: MixSpec) -> dict[str, Any]:
  """Codec and bitrate drawn from ``rng``; both signals rescaled so that max |.| == 1.

  With probability ``spec.p_band_limit`` the clean music is first band-limited at a cutoff
  drawn from ``spec.band_limit_hz`` (target and codec input alike): much music has no high
  band of its own (old or lo-fi recordings, sample-based instruments), and a model that
  never sees such a source fills every high band, harming good input.

  Returns:
    ``{"target", "degraded"}`` float32 ``(channels, samples)``, ``"codec"`` (index into
    ``spec.codecs``) and ``"bitrate"`` (kbit/s) as int32.
  """
  codec = int(rng.integers(len(spec.codecs)))
  bitrate = int(spec.bitrates[int(rng.integers(len(spec.bitrates)))])
  if spec.p_band_limit > 0 and rng.random() < spec.p_band_limit:
    clean = band_limit(clean, spec.sample_rate, rng.uniform(*spec.band_limit_hz))
  return make_pair(clean, spec.codecs[codec], bitrate, spec) | {"codec": np.int32(codec)}


def make_pair(clean: np.ndarray, codec: str, bitrate: int, spec: MixSpec) -> dict[str, Any]:
  """``clean`` through ``codec`` at ``bitrate``; both scaled by one factor to max |.| == 1."""
  peak = float(np.max(np.abs(clean)))
  if peak > 0:
    clean = clean * (PRE_CODEC_PEAK / peak)
  degraded = codecs.degrade(clean, spec.sample_rate, codec, bitrate, spec.mp3_quality)
  clean, degraded = rescale(clean, degraded)
  return {"target": clean, "degraded": degraded, "bitrate": np.int32(bitrate)}


def rescale(target: np.ndarray, degraded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Both divided by one factor so that the larger peak is exactly 1 (silence unchanged)."""
  scale = max(float(np.max(np.abs(target))), float(np.max(np.abs(degraded))))
  if scale > 0:
    target, degraded = target / scale, degraded / scale
  return target.astype(np.float32), degraded.astype(np.float32)


def training_item(tracks: list[dict[str, Any]], first: int, rng: np.random.Generator,
                  spec: MixSpec) -> dict[str, Any]:
  """One training pair (``mix`` then ``degrade_pair``), plus ``"num_stems"`` (0: mixture)."""
  clean, count = mix(tracks, first, rng, spec)
  return degrade_pair(clean, rng, spec) | {"num_stems": np.int32(count)}


def skipping_bad_files(make, count: int, first: int, rng: np.random.Generator,
                       bad: set[str]) -> dict[str, Any]:
  """``make(first)``; when a file fails to read it is added to ``bad`` (logged once) and
  ``make`` is called again with another random index in ``[0, count)``."""
  for _ in range(max(8, count)):
    try:
      return make(first)
    except UnreadableFile as e:
      if e.path not in bad:
        bad.add(e.path)
        log.warning("skipping unreadable audio: %s (%d bad files so far)", e, len(bad))
      first = int(rng.integers(count))
  raise DataError(f"could not read any audio after many tries; unreadable files: {sorted(bad)}")


def paired_item(pair: dict[str, Any], rng: np.random.Generator, spec: MixSpec) -> dict[str, Any]:
  """An aligned random crop of a clean/degraded file pair; one scale, max |.| == 1.

  ``"bitrate"`` and ``"codec"`` are -1 (unknown: real codec output).
  """
  target = degraded = None
  best = -1.0
  for _ in range(max(1, spec.max_crop_tries)):
    start = rng.uniform(0, max(0.0, pair["seconds"] - spec.segment_seconds))
    c = read_segment([pair["clean"]], start, spec)
    fraction = active_fraction(c, spec.sample_rate, spec.activity_threshold_db)
    if fraction > best:
      target, degraded, best = c, read_segment([pair["degraded"]], start, spec), fraction
    if fraction >= spec.activity_min_fraction:
      break
  target, degraded = rescale(target, degraded)
  return {"target": target, "degraded": degraded, "bitrate": np.int32(-1),
          "codec": np.int32(-1), "num_stems": np.int32(0)}
