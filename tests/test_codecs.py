import numpy as np
import pytest

from apollo_jax.data import codecs


def music_like(seconds=1.0, rate=44100, channels=2, seed=0):
  """Broadband test signal: decaying notes with harmonics plus noise-burst "hats"."""
  rng = np.random.default_rng(seed)
  n = int(seconds * rate)
  t = np.arange(n) / rate
  out = np.zeros((channels, n))
  for onset in np.arange(0, seconds, 0.125):
    f0 = rng.choice([110, 147, 196, 262, 330])
    env = np.where(t >= onset, np.exp(-(t - onset) * 6), 0)
    note = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 12))
    hat = rng.standard_normal(n) * np.where(t >= onset, np.exp(-(t - onset) * 60), 0)
    for c in range(channels):
      out[c] += 0.15 * env * note + 0.2 * hat * rng.uniform(0.5, 1)
  return (0.8 * out / np.abs(out).max()).astype(np.float32)


def lag(reference, estimate, max_lag=3000):
  """Samples ``estimate`` lags ``reference`` by (argmax of the cross-correlation)."""
  n = reference.shape[-1]
  cc = np.fft.irfft(np.fft.rfft(estimate, 2 * n) * np.conj(np.fft.rfft(reference, 2 * n)), 2 * n)
  lags = np.r_[np.arange(max_lag), np.arange(-max_lag, 0)]
  return int(lags[np.argmax(np.r_[cc[:max_lag], cc[-max_lag:]])])


def energy_above(audio, rate, hz):
  spec = np.abs(np.fft.rfft(audio, axis=-1)) ** 2
  return spec[..., np.fft.rfftfreq(audio.shape[-1], 1 / rate) > hz].sum()


@pytest.mark.parametrize("codec,bitrate,rate,channels", [
    ("mp3", 24, 44100, 2), ("mp3", 128, 44100, 2), ("mp3", 64, 48000, 1),
    ("mp3", 32, 22050, 2), ("mp3", 64, 96000, 2),  # 96 kHz: resampled to 48 kHz and back
    ("aac", 64, 44100, 2), ("opus", 48, 44100, 2), ("vorbis", 96, 44100, 1),
])
def test_degrade_is_sample_aligned(codec, bitrate, rate, channels):
  x = music_like(rate=rate, channels=channels, seed=bitrate)
  y = codecs.degrade(x, rate, codec, bitrate)
  assert y.shape == x.shape and y.dtype == np.float32
  for c in range(channels):
    assert lag(x[c], y[c]) == 0
  assert np.corrcoef(x[0], y[0])[0, 1] > 0.7


@pytest.mark.parametrize("codec", ["mp3", "opus"])
def test_degrade_never_wraps_around(codec):
  # Sound only at the start, then only at the end: a circular shift would move one into
  # the silence of the other.
  x = music_like(seed=3)
  head, tail = x.copy(), x.copy()
  head[:, 4000:] = 0
  tail[:, :-4000] = 0
  assert np.abs(codecs.degrade(head, 44100, codec, 64)[:, -3000:]).max() < 1e-3
  assert np.abs(codecs.degrade(tail, 44100, codec, 64)[:, :3000]).max() < 1e-3


@pytest.mark.parametrize("codec", codecs.CODECS)
def test_encode_decode_is_gapless(codec):
  x = music_like(seconds=0.5, seed=1)
  data = codecs.encode(x, 44100, codec, 96)
  assert data == codecs.encode(x, 44100, codec, 96)  # reproducible bytes
  y, rate = codecs.decode(data)
  assert rate == (48000 if codec == "opus" else 44100)
  assert y.shape[0] == 2
  if rate == 44100:
    assert y.shape[1] >= x.shape[1]
    assert lag(x[0], y[0, :x.shape[1]]) == 0


@pytest.mark.parametrize("bitrate,channels", [(24, 2), (128, 2), (48, 1)])
def test_fast_mp3_path_matches_ffmpeg_bit_for_bit(bitrate, channels):
  x = music_like(seconds=0.5, channels=channels, seed=2)
  fast = codecs.degrade(x, 44100, "mp3", bitrate)
  y, _ = codecs.decode(codecs.encode(x, 44100, "mp3", bitrate))
  np.testing.assert_array_equal(fast, y[:, :x.shape[1]])


def test_low_bitrate_mp3_removes_high_frequencies():
  x = music_like(seed=4)
  clean_hf = energy_above(x, 44100, 16000)
  for bitrate in (24, 32):
    assert energy_above(codecs.degrade(x, 44100, "mp3", bitrate), 44100, 16000) < 1e-3 * clean_hf
  # 128 kbit/s keeps far more of the top octave than 32 kbit/s.
  hi = energy_above(codecs.degrade(x, 44100, "mp3", 128), 44100, 10000)
  lo = energy_above(codecs.degrade(x, 44100, "mp3", 32), 44100, 10000)
  assert hi > 100 * lo


def test_mp3_24k_is_a_32k_stream_with_a_lower_low_pass():
  x = music_like(seed=5)
  assert len(codecs.encode(x, 44100, "mp3", 24)) == len(codecs.encode(x, 44100, "mp3", 32))
  y24, y32 = (codecs.degrade(x, 44100, "mp3", b) for b in (24, 32))
  assert energy_above(y24, 44100, 4500) < 0.2 * energy_above(y32, 44100, 4500)


def test_degrade_handles_loud_input_and_rejects_bad_arguments():
  x = music_like(seconds=0.3, seed=6)
  # Peak 2.4: scaled to 0.999 for the encoder and back afterwards.
  loud = codecs.degrade(3 * x, 44100, "mp3", 128)
  quiet = codecs.degrade(3 * x * (0.999 / 2.4), 44100, "mp3", 128)
  np.testing.assert_allclose(loud, quiet * (2.4 / 0.999), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="unknown codec 'flac'"):
    codecs.degrade(x, 44100, "flac")
  with pytest.raises(ValueError, match="shape"):
    codecs.degrade(x[0], 44100)
  with pytest.raises(ValueError, match="NaN"):
    codecs.degrade(np.full_like(x, np.nan), 44100)
  assert codecs.extension("aac") == ".m4a"
