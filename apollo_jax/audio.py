"""Reading, resampling and writing audio files: the one audio I/O module of the project.

Arrays are always float32 ``(channels, samples)``.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
  """A file that cannot be used as audio (missing, empty, corrupt, non-finite...)."""


# Formats libsndfile reads directly (seekable, partial reads); others go through PyAV.
SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".aiff", ".aif"}
AUDIO_EXTS = SOUNDFILE_EXTS | {".mp3", ".m4a", ".aac", ".opus", ".mp4", ".webm", ".wma"}
WRITE_EXTS = {".wav", ".flac"}


def decode_av(source, name: str | None = None) -> tuple[np.ndarray, int]:
  """Decodes the first audio stream of ``source`` (a path or a binary file object) with
  FFmpeg (PyAV) to float32 ``(channels, samples)``; returns ``(audio, rate)``.

  ``name`` labels error messages (defaults to ``source``). Container-level gapless
  information (LAME tag, MP4 edit lists, Ogg pre-skip) is honoured by FFmpeg.
  """
  import av  # Imported lazily: only compressed formats need FFmpeg.
  name = name or str(source)
  try:
    with av.open(source) as container:
      streams = container.streams.audio
      if not streams:
        raise AudioError(f"{name}: no audio stream")
      stream = streams[0]
      rate = stream.codec_context.sample_rate
      chunks = []
      for frame in container.decode(stream):
        a = frame.to_ndarray()
        if frame.format.is_planar:
          chunks.append(a.astype(np.float32).reshape(len(frame.layout.channels), -1))
        else:
          chunks.append(a.astype(np.float32).reshape(-1, len(frame.layout.channels)).T)
  except av.error.FFmpegError as e:
    raise AudioError(f"{name}: cannot decode ({e})") from None
  if not chunks:
    raise AudioError(f"{name}: contains no audio samples")
  audio = np.concatenate(chunks, axis=1)
  if np.issubdtype(a.dtype, np.integer):
    audio /= float(np.iinfo(a.dtype).max) + 1.0
  return audio, rate


def load(path: str, sample_rate: int | None = None, start: int = 0,
         frames: int = -1) -> tuple[np.ndarray, int]:
  """Reads audio as float32 ``(channels, samples)``.

  Args:
    path: any format soundfile or FFmpeg (PyAV) decodes.
    sample_rate: resample to this rate (soxr, high quality); None keeps the file's rate.
    start, frames: partial read in the file's own samples (soundfile formats seek; others
      are decoded whole and sliced).

  Returns:
    ``(audio, rate)`` with ``rate`` the returned audio's rate.

  Raises:
    AudioError: missing, unreadable, empty or non-finite audio.
  """
  if not os.path.isfile(path):
    raise AudioError(f"{path}: no such file")
  ext = os.path.splitext(path)[1].lower()
  audio = None
  if ext in SOUNDFILE_EXTS:
    try:
      data, rate = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
      audio = data.T
    except (sf.LibsndfileError, RuntimeError) as e:
      if ext != ".ogg":  # Ogg/Opus files that libsndfile refuses still decode with FFmpeg.
        raise AudioError(f"{path}: cannot decode ({e})") from None
  if audio is None:
    audio, rate = decode_av(path)
    audio = audio[:, start:None if frames < 0 else start + frames]
  audio = np.ascontiguousarray(audio, dtype=np.float32)
  if audio.shape[1] == 0:
    raise AudioError(f"{path}: contains no audio samples")
  if not np.isfinite(audio).all():
    raise AudioError(f"{path}: contains NaN or Inf samples")
  if sample_rate is not None and rate != sample_rate:
    audio, rate = resample(audio, rate, sample_rate), sample_rate
  return audio, rate


def info(path: str) -> tuple[int, int, int]:
  """``(sample_rate, channels, samples)`` without decoding (soundfile formats only)."""
  try:
    i = sf.info(path)
  except (sf.LibsndfileError, RuntimeError) as e:
    raise AudioError(f"{path}: cannot read header ({e})") from None
  return i.samplerate, i.channels, i.frames


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
  """``(channels, samples)`` at ``rate`` -> ``(channels, samples')`` at ``target_rate`` (soxr HQ)."""
  if rate == target_rate:
    return audio
  out = soxr.resample(np.ascontiguousarray(audio.T), rate, target_rate, quality="HQ")
  return np.ascontiguousarray(out.T, dtype=np.float32)


def save(path: str, audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> None:
  """Writes ``(channels, samples)`` to WAV or FLAC atomically (temp file, then rename).

  An interrupted write never leaves a truncated file at ``path``. ``subtype`` defaults to
  FLOAT for WAV and PCM_24 for FLAC.
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in WRITE_EXTS:
    raise AudioError(f"{path}: can only write {sorted(WRITE_EXTS)}, not '{ext or 'no extension'}'")
  subtype = subtype or ("FLOAT" if ext == ".wav" else "PCM_24")
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=ext, dir=folder)
  os.close(fd)
  try:
    sf.write(tmp, np.asarray(audio, np.float32).T, sample_rate, subtype=subtype,
             format=ext[1:].upper())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
