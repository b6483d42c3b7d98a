"""Reading, resampling and writing audio files: the one audio I/O module of the project.

Arrays are always float32 ``(channels, samples)``.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
from typing import Iterable, Iterator

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
  """A file that cannot be used as audio (missing, empty, corrupt, non-finite...)."""


# Formats libsndfile reads directly (seekable, partial reads; training stems); others go
# through PyAV. The one list of extensions: restore, eval and the data scan all use these.
SOUNDFILE_EXTS = {".wav", ".flac", ".ogg", ".aiff", ".aif"}
AUDIO_EXTS = SOUNDFILE_EXTS | {".mp3", ".m4a", ".aac", ".opus", ".mp4", ".webm", ".wma"}
WRITE_EXTS = {".wav", ".flac"}


def is_audio_name(name: str, exts: Iterable[str] = AUDIO_EXTS) -> bool:
  """A visible file name (no leading ``.``) whose extension, in any case, is in ``exts``."""
  return not name.startswith(".") and os.path.splitext(name)[1].lower() in exts


def find_audio(folder: str, exts: Iterable[str] = AUDIO_EXTS, exclude: str | None = None,
               onerror=None) -> list[str]:
  """Audio files under ``folder``, recursively: paths in walk order, folders and files each
  sorted by name. Hidden files and folders (a leading ``.``, e.g. our own temporary
  outputs) and the folder ``exclude`` (an absolute path) are skipped; a subfolder that
  cannot be listed goes to ``onerror`` (as in ``os.walk``; by default it is passed over).
  """
  out = []
  for root, dirs, files in os.walk(folder, onerror=onerror):
    dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (
        exclude and os.path.abspath(os.path.join(root, d)) == exclude))
    out += [os.path.join(root, f) for f in sorted(files) if is_audio_name(f, exts)]
  return out


def fit_length(x: np.ndarray, samples: int) -> np.ndarray:
  """``x (channels, n)`` cropped at the end or zero-padded there to ``samples`` samples (never wraps)."""
  if x.shape[1] >= samples:
    return x[:, :samples]
  return np.pad(x, ((0, 0), (0, samples - x.shape[1])))

# What libsndfile (through soundfile) raises for a file it cannot handle; soundfile's own
# checks raise ValueError (e.g. "frames must be specified for non-seekable files").
_SF_ERRORS = (sf.LibsndfileError, RuntimeError, ValueError)

# Sample rates outside this range are refused: no real recording has them, and a crafted
# header (1 Hz) would make the resampler multiply every block by 44,100.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
# Upper bound on the samples (frames x channels) of one block, before and after resampling:
# 16 MB of float32, whatever the rate ratio and channel count the header claims.
MAX_BLOCK_SAMPLES = 1 << 22
# Chunk walks stop after this many chunks: a crafted file cannot make the header parse slow.
_MAX_CHUNKS = 4096


def check_rate(path: str, rate: int) -> None:
  """Raises AudioError unless ``rate`` is within ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE``."""
  if not MIN_SAMPLE_RATE <= (rate or 0) <= MAX_SAMPLE_RATE:
    raise AudioError(f"{path}: sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}.."
                     f"{MAX_SAMPLE_RATE} Hz (corrupt header?)")


def _riff_declared_frames(f, size: int, big: bool, rf64: bool) -> int | None:
  """Frames the ``data`` chunk of a RIFF/RIFX/RF64 WAVE declares (None: unknown)."""
  order = ">" if big else "<"
  pos, block_align, ds64_data = 12, 0, None
  for _ in range(_MAX_CHUNKS):
    if pos + 8 > size:
      return None
    f.seek(pos)
    cid, csize = struct.unpack(order + "4sI", f.read(8))
    if cid == b"fmt " and csize >= 14:
      block_align = struct.unpack(order + "H", f.read(14)[12:14])[0]
    elif cid == b"ds64" and rf64 and csize >= 16:
      ds64_data = struct.unpack("<Q", f.read(16)[8:16])[0]
    elif cid == b"data":
      if rf64 and csize == 0xFFFFFFFF:
        csize = ds64_data
      # 0 and 0xFFFFFFFF are what streaming writers put when the length is unknown.
      if not block_align or csize in (None, 0, 0xFFFFFFFF):
        return None
      return csize // block_align
    pos += 8 + csize + (csize & 1)
  return None


def _aiff_declared_frames(f, size: int) -> int | None:
  """``numSampleFrames`` of an AIFF/AIFC ``COMM`` chunk (None when absent)."""
  pos = 12
  for _ in range(_MAX_CHUNKS):
    if pos + 8 > size:
      return None
    f.seek(pos)
    cid, csize = struct.unpack(">4sI", f.read(8))
    if cid == b"COMM" and csize >= 6:
      return struct.unpack(">I", f.read(6)[2:6])[0]
    pos += 8 + csize + (csize & 1)
  return None


def declared_frames(path: str) -> int | None:
  """Frames a WAV or AIFF header says the file holds (None: other formats or unknown).

  libsndfile silently shortens its frame count to the data actually present, so a file cut
  short (or a header claiming gigabytes) would pass as a shorter file; comparing with this
  finds it.
  """
  try:
    with open(path, "rb") as f:
      size = os.fstat(f.fileno()).st_size
      head = f.read(12)
      if len(head) < 12:
        return None
      if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return _riff_declared_frames(f, size, head[:4] == b"RIFX", head[:4] == b"RF64")
      if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return _aiff_declared_frames(f, size)
  except OSError:
    return None
  return None


def _check_complete(path: str, frames: int, rate: int) -> None:
  """Raises AudioError when the header declares more frames than the file holds."""
  declared = declared_frames(path)
  if declared is not None and declared > frames:
    raise AudioError(f"{path}: file is truncated (header says {declared / rate:.2f} s, the "
                     f"file holds {frames / rate:.2f} s)")


def _av_blocks(container, stream) -> Iterator[np.ndarray]:
  """Decoded frames of ``stream`` as float32 ``(channels, samples)``, integer formats scaled to [-1, 1)."""
  for frame in container.decode(stream):
    a = frame.to_ndarray()
    channels = len(frame.layout.channels)
    a = a.reshape(channels, -1) if frame.format.is_planar else a.reshape(-1, channels).T
    if np.issubdtype(a.dtype, np.integer):
      block = a.astype(np.float32)
      block /= float(np.iinfo(a.dtype).max) + 1.0
    else:  # float frames (MP3, AAC, Opus, Vorbis decode to float32): no copy
      block = a.astype(np.float32, copy=False)
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
  """``(sample_rate, channels, samples)`` without decoding (soundfile formats only).

  Raises:
    AudioError: unreadable header, a sample rate outside ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE``,
      or a WAV/AIFF shorter than its header says (truncated).
  """
  try:
    i = sf.info(path)
  except _SF_ERRORS as e:
    raise AudioError(f"{path}: cannot read header ({e})") from None
  check_rate(path, i.samplerate)
  _check_complete(path, i.frames, i.samplerate)
  return i.samplerate, i.channels, i.frames


def resample_stream(blocks: Iterable[np.ndarray], rate: int, target_rate: int,
                    channels: int) -> Iterator[np.ndarray]:
  """Resamples a stream of ``(channels, samples)`` blocks (soxr HQ, streaming).

  The output concatenates to exactly ``resample`` of the concatenated input.
  """
  if rate == target_rate:
    yield from blocks
    return
  stream = soxr.ResampleStream(rate, target_rate, channels, dtype="float32", quality="HQ")
  # Feed soxr pieces whose output stays within MAX_BLOCK_SAMPLES (its output concatenates
  # the same whatever the piece sizes).
  piece = max(1, int(MAX_BLOCK_SAMPLES * rate / target_rate) // max(1, channels))
  for block in blocks:
    for i in range(0, block.shape[1], piece):
      out = stream.resample_chunk(np.ascontiguousarray(block[:, i:i + piece].T, dtype=np.float32))
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
  """Streams a file as float32 ``(channels, samples)`` blocks in bounded memory.

  Usage::

    with Reader(path, sample_rate=44100) as r:   # opens, reads the header
      for block in r.blocks():                   # decodes, checks, resamples (soxr stream)
        ...

  The blocks concatenate to exactly what :func:`load` returns. Attributes: ``file_rate``
  (the file's rate), ``sample_rate`` (the rate of the blocks), ``channels`` and
  ``frames``, the length at ``sample_rate`` announced by the header (an estimate for
  FFmpeg formats, None when unknown).

  Raises:
    AudioError: on open (missing file, unrecognised format, no audio stream, a sample rate
      outside ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE``, a WAV/AIFF shorter than its header says)
      or while iterating (corrupt or truncated data, NaN/Inf samples, no samples at all).
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
      except _SF_ERRORS as e:
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
    try:
      check_rate(path, self.file_rate)
      if self._sf is not None:
        _check_complete(path, header_frames, self.file_rate)
    except AudioError:
      self.close()
      raise
    self.sample_rate = sample_rate or self.file_rate
    self._integer_pcm = self._sf is not None and self._sf.subtype == "PCM_16"
    self.file_samples = 0
    self._header_frames = header_frames
    self.frames = (None if header_frames is None
                   else math.ceil(header_frames * self.sample_rate / self.file_rate))

  def _native_blocks(self, block_frames: int, start: int = 0) -> Iterator[np.ndarray]:
    if self._sf is not None:
      read = 0
      # 16-bit PCM: libsndfile's float conversion is ~3x slower than reading int16 and
      # scaling in NumPy, which gives the same values (x / 32768, exact in float32).
      # The int16 blocks go into one buffer (soundfile would copy each): every block is
      # converted into a new float32 array before the next read overwrites it.
      pcm16 = self._integer_pcm
      buffer = None
      if pcm16:  # no longer than what is left of the file, as soundfile would allocate
        left = max(1, min(block_frames, self._header_frames - start))
        buffer = np.empty((left, self.channels), np.int16)
      try:
        for block in self._sf.blocks(None if pcm16 else block_frames,
                                     dtype="int16" if pcm16 else "float32", always_2d=True,
                                     out=buffer):
          read += block.shape[0]
          yield np.ascontiguousarray(block.T) * np.float32(1 / 32768) if pcm16 else block.T
      except _SF_ERRORS as e:
        raise AudioError(f"{self.path}: cannot decode ({e})") from None
      if start + read < self._header_frames:  # the data ended before the header said
        said, got = self._header_frames / self.file_rate, (start + read) / self.file_rate
        raise AudioError(f"{self.path}: file is truncated (header says {said:.2f} s, only "
                         f"{got:.2f} s could be read)")
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
    """Yields ``(channels, samples)`` float32 blocks at ``sample_rate``.

    ``start`` and ``frames`` select a part in the file's own samples (seeking when
    soundfile reads the format). When the iteration ends, ``file_samples`` holds the number
    of the file's own samples read.
    """
    return resample_stream(self._checked_blocks(block_frames, start, frames), self.file_rate,
                           self.sample_rate, self.channels)

  def _checked_blocks(self, block_frames: int, start: int, frames: int) -> Iterator[np.ndarray]:
    # Bound each native block: a header may claim a thousand channels.
    block_frames = max(1, min(block_frames, MAX_BLOCK_SAMPLES // max(1, self.channels)))
    seeked = 0
    if self._sf is not None and start:
      try:
        self._sf.seek(start)
      except _SF_ERRORS as e:
        raise AudioError(f"{self.path}: cannot decode ({e})") from None
      seeked, start = start, 0
    if self._sf is not None and frames >= 0:  # soundfile reads whole blocks: no more than asked
      block_frames = max(1, min(block_frames, frames))
    skip, left = start, frames
    self.file_samples = 0
    for block in self._native_blocks(block_frames, seeked):
      if skip:
        block, skip = block[:, skip:], max(0, skip - block.shape[1])
      if left >= 0:
        block, left = block[:, :left], left - min(left, block.shape[1])
      if block.shape[1]:
        if not self._integer_pcm and not np.isfinite(block).all():  # 16-bit PCM is finite
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


def current_umask() -> int:
  """The process umask (reading it means setting it: set it straight back)."""
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


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
  """Writes ``(channels, samples)`` blocks to WAV or FLAC atomically.

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
    try:
      os.close(fd)
      self._file = sf.SoundFile(self._tmp, "w", sample_rate, channels, subtype=subtype,
                                format=ext[1:].upper())
    except BaseException:
      os.remove(self._tmp)
      raise

  def write(self, block: np.ndarray) -> None:
    self._file.write(np.asarray(block, np.float32).T)

  def commit(self) -> None:
    self._file.close()
    # mkstemp made the temp file 0600; the output gets the mode any new file would get.
    os.chmod(self._tmp, 0o666 & ~current_umask())
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
