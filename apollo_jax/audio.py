"""Reading, resampling and writing audio files: the one audio I/O module of the project.

Arrays are always float32 ``(channels, samples)``.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Iterable, Iterator

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
  """A file that cannot be used as audio (missing, empty, corrupt, non-finite...)."""


# Formats libsndfile reads directly (seekable, partial reads); others go through PyAV.
SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".aiff", ".aif"}
AUDIO_EXTS = SOUNDFILE_EXTS | {".mp3", ".m4a", ".aac", ".opus", ".mp4", ".webm", ".wma"}
WRITE_EXTS = {".wav", ".flac"}


def _av_blocks(container, stream) -> Iterator[np.ndarray]:
  """Decoded frames of ``stream`` as float32 ``(channels, n)``, integer formats scaled to [-1, 1)."""
  for frame in container.decode(stream):
    a = frame.to_ndarray()
    channels = len(frame.layout.channels)
    a = a.reshape(channels, -1) if frame.format.is_planar else a.reshape(-1, channels).T
    block = a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
      block /= float(np.iinfo(a.dtype).max) + 1.0
    yield block


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
      chunks = list(_av_blocks(container, stream))
  except av.error.FFmpegError as e:
    raise AudioError(f"{name}: cannot decode ({e})") from None
  if not chunks:
    raise AudioError(f"{name}: contains no audio samples")
  return np.concatenate(chunks, axis=1), rate


def load(path: str, sample_rate: int | None = None, start: int = 0,
         frames: int = -1) -> tuple[np.ndarray, int]:
  """Reads audio as float32 ``(channels, samples)``.

  Args:
    path: any format soundfile or FFmpeg (PyAV) decodes.
    sample_rate: resample to this rate (soxr, high quality); None keeps the file's rate.
    start, frames: partial read in the file's own samples (soundfile formats seek; others
      are decoded from the start).

  Returns:
    ``(audio, rate)`` with ``rate`` the returned audio's rate.

  Raises:
    AudioError: missing, unreadable, truncated, empty or non-finite audio.
  """
  with Reader(path, sample_rate) as reader:
    blocks = list(reader.blocks(1 << 20, start, frames))
    # One block (short reads): no copy when it is already contiguous.
    out = np.ascontiguousarray(blocks[0]) if len(blocks) == 1 else np.concatenate(blocks, axis=1)
    return out, reader.sample_rate


def info(path: str) -> tuple[int, int, int]:
  """``(sample_rate, channels, samples)`` without decoding (soundfile formats only)."""
  try:
    i = sf.info(path)
  except (sf.LibsndfileError, RuntimeError) as e:
    raise AudioError(f"{path}: cannot read header ({e})") from None
  return i.samplerate, i.channels, i.frames


def resample_stream(blocks: Iterable[np.ndarray], rate: int, target_rate: int,
                    channels: int) -> Iterator[np.ndarray]:
  """Resamples a stream of ``(channels, n)`` blocks (soxr HQ, streaming).

  The output concatenates to exactly ``resample`` of the concatenated input.
  """
  if rate == target_rate:
    yield from blocks
    return
  stream = soxr.ResampleStream(rate, target_rate, channels, dtype="float32", quality="HQ")
  for block in blocks:
    out = stream.resample_chunk(np.ascontiguousarray(block.T, dtype=np.float32))
    if len(out):
      yield np.ascontiguousarray(out.T)
  tail = stream.resample_chunk(np.zeros((0, channels), np.float32), last=True)
  if len(tail):
    yield np.ascontiguousarray(tail.T)


def resample(audio: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
  """``(channels, samples)`` at ``rate`` -> ``(channels, samples')`` at ``target_rate`` (soxr HQ)."""
  if rate == target_rate:
    return audio
  out = soxr.resample(np.ascontiguousarray(audio.T), rate, target_rate, quality="HQ")
  return np.ascontiguousarray(out.T, dtype=np.float32)


class Reader:
  """Streams a file as float32 ``(channels, n)`` blocks in bounded memory.

  Usage::

    with Reader(path, sample_rate=44100) as r:   # opens, reads the header
      for block in r.blocks():                   # decodes, checks, resamples (soxr stream)
        ...

  The blocks concatenate to exactly what :func:`load` returns. Attributes: ``file_rate``
  (the file's rate), ``sample_rate`` (the rate of the blocks), ``channels`` and
  ``frames``, the length at ``sample_rate`` announced by the header (an estimate for
  FFmpeg formats, None when unknown).

  Raises:
    AudioError: on open (missing file, unrecognised format, no audio stream) or while
      iterating (corrupt or truncated data, NaN/Inf samples, no samples at all).
  """

  def __init__(self, path: str, sample_rate: int | None = None):
    self.path = path
    if not os.path.isfile(path):
      raise AudioError(f"{path}: no such file")
    self._sf = self._av = None
    header_frames = None
    ext = os.path.splitext(path)[1].lower()
    if ext in SOUNDFILE_EXTS:
      try:
        self._sf = sf.SoundFile(path)
        self.file_rate, self.channels = self._sf.samplerate, self._sf.channels
        header_frames = self._sf.frames
      except (sf.LibsndfileError, RuntimeError) as e:
        if ext != ".ogg":  # Ogg/Opus files that libsndfile refuses still decode with FFmpeg.
          raise AudioError(f"{path}: cannot decode ({e})") from None
    if self._sf is None:
      import av  # Imported lazily: only compressed formats need FFmpeg.
      try:
        self._av = av.open(path)
      except av.error.FFmpegError as e:
        raise AudioError(f"{path}: cannot decode ({e})") from None
      if not self._av.streams.audio:
        self._av.close()
        raise AudioError(f"{path}: no audio stream")
      self._stream = self._av.streams.audio[0]
      self.file_rate = self._stream.codec_context.sample_rate
      self.channels = self._stream.codec_context.channels
      if self._stream.duration is not None and self._stream.time_base is not None:
        header_frames = int(self._stream.duration * self._stream.time_base * self.file_rate)
    self.sample_rate = sample_rate or self.file_rate
    self.file_samples = 0
    self._header_frames = header_frames
    self.frames = (None if header_frames is None
                   else math.ceil(header_frames * self.sample_rate / self.file_rate))

  def _native_blocks(self, block_frames: int) -> Iterator[np.ndarray]:
    if self._sf is not None:
      # 16-bit PCM: libsndfile's float conversion is ~3x slower than reading int16 and
      # scaling in NumPy, which gives the same values (x / 32768, exact in float32).
      pcm16 = self._sf.subtype == "PCM_16"
      try:
        for block in self._sf.blocks(block_frames, dtype="int16" if pcm16 else "float32",
                                     always_2d=True):
          yield np.multiply(block.T, np.float32(1 / 32768), order="C") if pcm16 else block.T
      except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{self.path}: cannot decode ({e})") from None
      return
    import av
    decoded = 0
    pending: list[np.ndarray] = []  # codec frames are small (1152 samples for MP3): group them
    try:
      for frame in _av_blocks(self._av, self._stream):
        pending.append(frame)
        decoded += frame.shape[1]
        if sum(p.shape[1] for p in pending) >= block_frames:
          yield np.concatenate(pending, axis=1)
          pending = []
    except av.error.FFmpegError as e:
      raise AudioError(f"{self.path}: cannot decode ({e})") from None
    if pending:
      yield np.concatenate(pending, axis=1)
    # A gapless header (e.g. the LAME/Xing tag of an MP3) states the length; decoding
    # far less than that means the file was cut short. Estimated lengths agree with the data.
    expected = self._header_frames
    if expected and decoded < 0.9 * expected - 4096:
      raise AudioError(
          f"{self.path}: file is truncated (header says {expected / self.file_rate:.2f} s, "
          f"only {decoded / self.file_rate:.2f} s could be decoded)")

  def blocks(self, block_frames: int = 65536, start: int = 0,
             frames: int = -1) -> Iterator[np.ndarray]:
    """Yields ``(channels, n)`` float32 blocks at ``sample_rate``.

    ``start`` and ``frames`` select a part in the file's own samples (seeking when
    soundfile reads the format). When the iteration ends, ``file_samples`` holds the number
    of the file's own samples read.
    """
    return resample_stream(self._checked_blocks(block_frames, start, frames), self.file_rate,
                           self.sample_rate, self.channels)

  def _checked_blocks(self, block_frames: int, start: int, frames: int) -> Iterator[np.ndarray]:
    if self._sf is not None and start:
      try:
        self._sf.seek(start)
      except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{self.path}: cannot decode ({e})") from None
      start = 0
    if self._sf is not None and frames >= 0:  # soundfile reads whole blocks: no more than asked
      block_frames = max(1, min(block_frames, frames))
    skip, left = start, frames
    self.file_samples = 0
    for block in self._native_blocks(block_frames):
      if skip:
        block, skip = block[:, skip:], max(0, skip - block.shape[1])
      if left >= 0:
        block, left = block[:, :left], left - min(left, block.shape[1])
      if block.shape[1]:
        if not np.isfinite(block).all():
          raise AudioError(f"{self.path}: contains NaN or Inf samples")
        self.file_samples += block.shape[1]
        yield block
      if left == 0:
        break
    if self.file_samples == 0:
      raise AudioError(f"{self.path}: contains no audio samples")

  def close(self) -> None:
    if self._sf is not None:
      self._sf.close()
    if self._av is not None:
      self._av.close()

  def __enter__(self) -> "Reader":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def check_output_format(path: str, subtype: str | None = None) -> str:
  """Returns the soundfile subtype for writing ``path`` (WAV: FLOAT, FLAC: PCM_24 by default).

  Raises:
    AudioError: the extension is not one of ``WRITE_EXTS`` or the subtype does not fit it.
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in WRITE_EXTS:
    raise AudioError(f"{path}: can only write {sorted(WRITE_EXTS)}, not '{ext or 'no extension'}'")
  subtype = (subtype or ("FLOAT" if ext == ".wav" else "PCM_24")).upper()
  if not sf.check_format(ext[1:].upper(), subtype):
    raise AudioError(f"{path}: subtype {subtype} cannot be written to {ext} "
                     f"(choose from {sorted(sf.available_subtypes(ext[1:].upper()))})")
  return subtype


class Writer:
  """Writes ``(channels, n)`` blocks to WAV or FLAC atomically.

  Blocks go to a hidden temp file in the target folder, renamed onto ``path`` when the
  ``with`` block ends without an exception; on an exception (or :meth:`abort`) the temp
  file is removed, so an interrupted write never leaves a truncated file at ``path``.
  ``subtype`` as in :func:`check_output_format`.
  """

  def __init__(self, path: str, sample_rate: int, channels: int, subtype: str | None = None):
    self.path = path
    subtype = check_output_format(path, subtype)
    ext = os.path.splitext(path)[1].lower()
    folder = os.path.dirname(os.path.abspath(path))
    fd, self._tmp = tempfile.mkstemp(prefix=".tmp-", suffix=ext, dir=folder)
    os.close(fd)
    try:
      self._file = sf.SoundFile(self._tmp, "w", sample_rate, channels, subtype=subtype,
                                format=ext[1:].upper())
    except BaseException:
      os.remove(self._tmp)
      raise

  def write(self, block: np.ndarray) -> None:
    self._file.write(np.asarray(block, np.float32).T)

  def commit(self) -> None:
    self._file.close()
    os.replace(self._tmp, self.path)

  def abort(self) -> None:
    self._file.close()
    if os.path.exists(self._tmp):
      os.remove(self._tmp)

  def __enter__(self) -> "Writer":
    return self

  def __exit__(self, exc_type, *exc) -> None:
    if exc_type is None:
      self.commit()
    else:
      self.abort()


def save(path: str, audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> None:
  """Writes ``(channels, samples)`` to WAV or FLAC atomically (see :class:`Writer`).

  An interrupted write never leaves a truncated file at ``path``. ``subtype`` defaults to
  FLOAT for WAV and PCM_24 for FLAC.
  """
  audio = np.asarray(audio, np.float32)
  with Writer(path, sample_rate, audio.shape[0], subtype) as w:
    w.write(audio)
