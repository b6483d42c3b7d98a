"""Lossy codec round trips in memory: the degradation Apollo learns to undo (paper III-A).

Arrays are float32 ``(channels, samples)`` with 1 or 2 channels. Nothing touches the disk
and no subprocess is started: encoders run in-process through PyAV (FFmpeg) and, for the
fast MP3 path, lameenc.

Codecs (``CODECS``):
  - ``"mp3"``: LAME (libmp3lame), constant bitrate. ``encode`` goes through FFmpeg, whose
    muxer writes the LAME/Info tag, so any gapless decoder (FFmpeg, ``decode``) returns the
    input samples without delay. ``degrade`` calls the same LAME library through lameenc,
    which is about four times faster here; its output carries no tag, so the fixed LAME
    delay (``LAME_DELAY`` = 576 encoder + 529 decoder samples) is cut instead. Both paths
    give bit-identical audio (tested). The encoder sees 16-bit PCM, as from a CD.
  - ``"aac"``: FFmpeg's native AAC-LC encoder in an MP4 (.m4a) container.
  - ``"opus"``: libopus in Ogg. Opus runs at 48 kHz: other rates are resampled (soxr) on the
    way in, and ``degrade`` resamples back.
  - ``"vorbis"``: FFmpeg's built-in (experimental) Vorbis encoder in Ogg. It has no bitrate
    control, only a quality scale: the requested bitrate is mapped onto that scale with a
    table measured on music-like noise, so the real bitrate varies with the content. It only
    encodes stereo: mono is encoded as two equal channels (``degrade`` returns mono).

MP3 bitrates: MPEG-1 Layer III (32, 44.1 and 48 kHz) only has 32, 40, 48, 56, 64, 80, 96,
112, 128, 160, 192, 224, 256 and 320 kbit/s; there is **no 24 kbit/s at 44.1 kHz**. Asked
for 24, LAME writes a 32 kbit/s stream but picks its low-pass for 24 (about 4 kHz instead
of about 5.6 kHz for 32), so "24" still degrades more than "32". The paper's 24 kbit/s
condition is this LAME behaviour.
"""

from __future__ import annotations

import fractions
import io

import numpy as np

from apollo_jax import audio as audio_io

CODECS = ("mp3", "aac", "opus", "vorbis")
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# Samples LAME output lags its input by, when no gapless tag is read: the encoder's
# look-ahead (576) plus the MP3 synthesis filterbank of the decoder (528 + 1).
LAME_DELAY = 576 + 529
LAME_DEFAULT_QUALITY = 3  # LAME's own default for ``-q`` (0 best/slowest .. 9 fastest).

# (FFmpeg encoder, container format, file extension) per codec.
_FFMPEG = {
    "mp3": ("libmp3lame", "mp3", ".mp3"),
    "aac": ("aac", "mp4", ".m4a"),
    "opus": ("libopus", "ogg", ".opus"),
    "vorbis": ("vorbis", "ogg", ".ogg"),
}
# kbit/s each encoder can produce (total over channels): LAME 8..320 (24 at 44.1 kHz gives
# 32 with the 24 low-pass, see above), FFmpeg's AAC-LC up to 512 for stereo, libopus 6..510;
# the Vorbis quality table is only measured over 26..149, beyond it the label would lie.
BITRATE_RANGES = {"mp3": (8, 320), "aac": (16, 512), "opus": (6, 510), "vorbis": (26, 149)}

# Requested kbit/s -> FFmpeg vorbis global_quality (lambda units); measured on pink noise.
_VORBIS_KBPS = (26.0, 34.0, 49.0, 66.0, 84.0, 98.0, 121.0, 149.0)
_VORBIS_QUALITY = (20.0, 40.0, 60.0, 80.0, 100.0, 118.0, 150.0, 200.0)


def extension(codec: str) -> str:
  """File extension of ``encode``'s bytes for ``codec`` (e.g. ``".m4a"`` for AAC)."""
  return _FFMPEG[_check_codec(codec)][2]


def _check_codec(codec: str) -> str:
  if codec not in CODECS:
    raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")
  return codec


def check_bitrate(codec: str, bitrate) -> int:
  """``bitrate`` (kbit/s) as an int, or ValueError when ``codec`` cannot produce it."""
  low, high = BITRATE_RANGES[_check_codec(codec)]
  if isinstance(bitrate, bool) or not isinstance(bitrate, (int, np.integer)) or not (
      low <= bitrate <= high):
    raise ValueError(f"{codec} has no {bitrate} kbit/s: its bitrates are {low}..{high} kbit/s")
  return int(bitrate)


def _check_audio(audio: np.ndarray) -> np.ndarray:
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 2 or audio.shape[0] not in (1, 2) or audio.shape[1] == 0:
    raise ValueError(f"expected float32 audio (channels=1|2, samples>0), got shape {audio.shape}")
  if not np.isfinite(audio).all():
    raise ValueError("audio contains NaN or Inf samples")
  return audio


def _codec_rate(codec: str, sample_rate: int) -> int:
  """The rate the codec runs at: the input rate when supported, else the next supported one."""
  rates = {"mp3": MP3_RATES, "opus": OPUS_RATES}.get(codec)
  if rates is None or sample_rate in rates:
    return sample_rate
  higher = [r for r in rates if r >= sample_rate]
  return higher[0] if higher else rates[-1]


def _to_int16(audio: np.ndarray) -> np.ndarray:
  return np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def encode(audio: np.ndarray, sample_rate: int, codec: str = "mp3", bitrate: int = 128,
           mp3_quality: int = LAME_DEFAULT_QUALITY) -> bytes:
  """Encodes float32 ``(channels, samples)`` to the bytes of a complete file.

  Args:
    audio: 1 or 2 channels; samples outside [-1, 1] are clipped (MP3 is fed 16-bit PCM).
    sample_rate: input rate in Hz; resampled to a rate the codec supports if needed.
    codec: one of ``CODECS``; the container is given by ``extension(codec)``.
    bitrate: target bitrate in kbit/s (total over channels).
    mp3_quality: LAME's ``-q`` (0 slowest/best .. 9 fastest), MP3 only.

  Returns:
    The file bytes; ``decode`` returns the audio without codec delay.
  """
  import av  # FFmpeg is needed only here and in decode.
  audio = _check_audio(audio)
  encoder, container_format, _ = _FFMPEG[_check_codec(codec)]
  rate = _codec_rate(codec, sample_rate)
  audio = audio_io.resample(audio, sample_rate, rate)
  if codec == "vorbis" and audio.shape[0] == 1:  # FFmpeg's Vorbis encoder is stereo-only.
    audio = np.repeat(audio, 2, axis=0)
  layout = "mono" if audio.shape[0] == 1 else "stereo"
  options = {}
  if codec == "mp3":
    options["compression_level"] = str(int(mp3_quality))
  elif codec == "vorbis":
    quality = np.interp(bitrate, _VORBIS_KBPS, _VORBIS_QUALITY)
    options.update(strict="experimental", flags="+qscale", global_quality=str(int(quality)))
  buf = io.BytesIO()
  # bitexact: no random Ogg serial numbers or version strings, so the bytes are reproducible.
  with av.open(buf, "w", format=container_format, options={"fflags": "+bitexact"}) as out:
    stream = out.add_stream(encoder, rate=rate)
    ctx = stream.codec_context
    ctx.layout = layout
    ctx.bit_rate = int(bitrate) * 1000
    ctx.options = options
    formats = [f.name for f in ctx.codec.audio_formats]
    if codec == "mp3":
      fmt, samples = "s16p", _to_int16(audio)
    else:
      fmt, samples = ("fltp", audio) if "fltp" in formats else ("flt", audio)
    step = ctx.frame_size or 1024
    time_base = fractions.Fraction(1, rate)
    for start in range(0, samples.shape[1], step):
      chunk = samples[:, start:start + step]
      data = chunk if fmt.endswith("p") else chunk.T.reshape(1, -1)
      frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
      frame.sample_rate, frame.pts, frame.time_base = rate, start, time_base
      for packet in stream.encode(frame):
        out.mux(packet)
    for packet in stream.encode(None):
      out.mux(packet)
  return buf.getvalue()


def decode(data: bytes) -> tuple[np.ndarray, int]:
  """Decodes file bytes (any format FFmpeg reads) to ``(audio (channels, samples), rate)``."""
  return audio_io.decode_av(io.BytesIO(data), name="encoded bytes")


def _lame_round_trip(audio: np.ndarray, rate: int, bitrate: int, quality: int) -> np.ndarray:
  """MP3 through lameenc + FFmpeg decoding, aligned by cutting ``LAME_DELAY``."""
  import lameenc
  enc = lameenc.Encoder()
  enc.set_bit_rate(int(bitrate))
  enc.set_in_sample_rate(rate)
  enc.set_out_sample_rate(rate)  # lameenc would otherwise pick its own output rate
  enc.set_channels(audio.shape[0])
  enc.set_quality(int(quality))
  data = bytes(enc.encode(_to_int16(audio).T.tobytes()) + enc.flush())
  decoded, _ = decode(data)
  return audio_io.fit_length(decoded[:, LAME_DELAY:], audio.shape[1])


def degrade(audio: np.ndarray, sample_rate: int, codec: str = "mp3", bitrate: int = 128,
            mp3_quality: int = LAME_DEFAULT_QUALITY) -> np.ndarray:
  """Encodes and decodes ``audio``: same shape, rate and sample alignment as the input.

  Args:
    audio: float32 ``(channels, samples)``, 1 or 2 channels. Louder than full scale is fine:
      it is scaled down before the encoder and back up after.
    sample_rate: rate of ``audio`` in Hz.
    codec, bitrate, mp3_quality: as in ``encode``.

  Returns:
    float32 ``(channels, samples)``: sample ``t`` of the output is the codec's version of
    sample ``t`` of the input (codec delay removed, end cropped or zero-padded).
  """
  audio = _check_audio(audio)
  _check_codec(codec)
  peak = float(np.max(np.abs(audio)))
  gain = 1.0 if peak <= 1.0 else 0.999 / peak
  x = audio * gain
  if codec == "mp3" and sample_rate in MP3_RATES:
    y = _lame_round_trip(x, sample_rate, bitrate, mp3_quality)
  else:
    y, rate = decode(encode(x, sample_rate, codec, bitrate, mp3_quality))
    y = audio_io.fit_length(audio_io.resample(y, rate, sample_rate), audio.shape[1])
    if y.shape[0] != audio.shape[0]:  # mono encoded as stereo (Vorbis)
      y = y.mean(axis=0, keepdims=True)
  return (y / gain).astype(np.float32) if gain != 1.0 else y.astype(np.float32, copy=False)
