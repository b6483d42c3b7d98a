"""Fuzzing the readers (issue 15, "Deliver"): seeded broken audio files and torch zips.

Every file goes through the readers in a child process (``tests/fuzz_worker.py``) with an
address-space limit and a per-file time limit. Each must be read or refused with one of
the project's own errors (``AudioError``; ``CheckpointFormatError`` /
``UnsafeCheckpointError``): no other exception, no crash of the process, no hang, and the
peak RSS stays under 2 GB. Many files share one child process, so the cost is the reading,
not Python start-ups.
"""

import collections
import json
import os
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf

from torch_zip import write_crafted_zip, write_malicious_zip, write_torch_zip

pytestmark = pytest.mark.slow

SEED = 15
AUDIO_FILES = 1000    # the issue asks for 1,000 fuzzed audio files
TORCH_ZIPS = 200      # and 200 fuzzed torch zips
BATCHES = 4           # child processes per kind (run one after another: 2 shared cores)
MEMORY_LIMIT_GB = 3.0  # RLIMIT_AS of a child; address space runs above RSS
MAX_RSS_MB = 2048
SECONDS_PER_FILE = 30
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# (extension, soundfile format, subtypes); a subtype that refuses the drawn rate or channel
# count falls back to 16-bit WAV.
FORMATS = [
    (".wav", "WAV", ["PCM_16", "PCM_24", "PCM_32", "PCM_U8", "FLOAT", "DOUBLE", "ULAW", "ALAW",
                     "IMA_ADPCM", "MS_ADPCM", "GSM610"]),
    (".wav", "RF64", ["PCM_16", "FLOAT"]),
    (".flac", "FLAC", ["PCM_S8", "PCM_16", "PCM_24"]),
    (".ogg", "OGG", ["VORBIS", "OPUS"]),
    (".aiff", "AIFF", ["PCM_16", "PCM_24", "FLOAT", "ULAW"]),
    (".mp3", "MP3", ["MPEG_LAYER_III"]),
]
RATES = [1000, 8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 192000]


def _signal(rng, frames, channels, subtype):
  x = 0.5 * rng.standard_normal((frames, channels)).astype(np.float32)
  # Only float files can hold NaN/Inf (lossy encoders abort on them while writing).
  if subtype in ("FLOAT", "DOUBLE") and rng.random() < 0.1 and frames:
    x[rng.integers(frames), rng.integers(channels)] = rng.choice([np.nan, np.inf, 3e38])
  return x


def _write_valid(path_stem, rng):
  """A small valid file of a random format, rate, channel count, length and subtype."""
  ext, fmt, subtypes = FORMATS[rng.integers(len(FORMATS))]
  subtype = subtypes[rng.integers(len(subtypes))]
  rate = int(rng.choice(RATES))
  channels = int(rng.choice([1, 1, 2, 2, 2, 3, 6, 8]))
  frames = int(rng.choice([0, 1, 100, int(rng.integers(0, 12000))]))
  x = _signal(rng, frames, channels, subtype)
  path = path_stem + ext
  try:
    sf.write(path, x, rate, subtype=subtype, format=fmt)
  except Exception:  # the combination is not writable: plain 16-bit WAV
    path = path_stem + ".wav"
    sf.write(path, np.nan_to_num(x, posinf=0.0, neginf=0.0), rate, subtype="PCM_16")
  return path


def _mutate(raw: bytearray, rng) -> bytearray:
  """One or more random corruptions of a file's bytes."""
  for _ in range(int(rng.integers(1, 3))):
    kind = rng.integers(9)
    n = len(raw)
    if kind == 0 and n:  # flip header bytes
      for _ in range(int(rng.integers(1, 6))):
        raw[rng.integers(min(n, 64))] ^= 1 << int(rng.integers(8))
    elif kind == 1 and n:  # flip bytes anywhere
      for _ in range(int(rng.integers(1, 20))):
        raw[rng.integers(n)] = int(rng.integers(256))
    elif kind == 2 and n:  # truncate
      del raw[int(rng.integers(n)):]
    elif kind == 3:  # trailing garbage
      raw += rng.integers(0, 256, int(rng.integers(1, 5000)), dtype=np.uint8).tobytes()
    elif kind == 4 and n >= 28:  # WAV/AIFF-ish rate field: absurd values
      raw[24:28] = struct.pack("<I", int(rng.choice([0, 1, 7, 999, 768001, 2**31 - 1, 2**32 - 1])))
    elif kind == 5 and n >= 24:  # channel count field
      raw[22:24] = struct.pack("<H", int(rng.choice([0, 3, 255, 1024, 65535])))
    elif kind == 6 and n >= 8:  # a chunk size claiming more (or less) than is there
      at = raw.find(b"data") if raw.find(b"data") >= 0 else 4
      raw[at + 4:at + 8] = struct.pack("<I", int(rng.integers(0, 2**32)))
    elif kind == 7 and n:  # zero a region
      a = int(rng.integers(n))
      end = min(n, a + int(rng.integers(1, 512)))
      raw[a:end] = bytes(end - a)
    elif kind == 8:  # random bytes with a plausible magic
      raw = bytearray(rng.choice([b"RIFF", b"fLaC", b"OggS", b"FORM", b"ID3\x03"])
                      + rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes())
  return raw


def make_audio_files(folder: str, count: int, seed: int) -> list[str]:
  rng = np.random.default_rng(seed)
  paths = []
  for i in range(count):
    path = _write_valid(os.path.join(folder, f"{i:04d}"), rng)
    if rng.random() < 0.85:  # most are broken; the rest check that valid files still read
      raw = _mutate(bytearray(open(path, "rb").read()), rng)
      with open(path, "wb") as f:
        f.write(bytes(raw))
    paths.append(path)
  return paths


def _tiny_state_dict(rng):
  from apollo_jax import ApolloConfig
  from apollo_jax.checkpoints import published
  from fakes import random_params
  cfg = ApolloConfig(feature_dim=16, num_layers=1, num_heads=8, num_bands=int(rng.integers(2, 80)))
  sd = published.generator_state_dict_from_params(cfg, random_params(cfg, seed=int(rng.integers(99))))
  return {k: v for k, v in sd.items() if not k.endswith(("cos_freq", "sin_freq"))}


def _random_view(rng):
  numel = int(rng.choice([0, 1, 16, 1000]))
  offset = int(rng.choice([0, 1, numel, numel + 1, -1, 2**40]))
  ndim = int(rng.integers(0, 4))
  size = tuple(int(rng.choice([0, 1, 3, 16, 2**20, -1])) for _ in range(ndim))
  stride = tuple(int(rng.choice([0, 1, 3, 16, -1, 2**40])) for _ in range(ndim))
  storage = ("0", numel) if rng.random() < 0.9 else rng.choice(["str", 3, 1.5, None])
  return storage, offset, size, stride


def _rewrite_member(path, rng):
  """Corrupts data.pkl or a storage inside the archive (the zip itself stays valid)."""
  with zipfile.ZipFile(path) as zf:
    members = {n: bytearray(zf.read(n)) for n in zf.namelist()}
  names = sorted(members)
  target = names[int(rng.integers(len(names)))]
  if rng.random() < 0.5:
    target = next(n for n in names if n.endswith("data.pkl"))
  members[target] = _mutate(members[target], rng)
  if rng.random() < 0.1:
    del members[names[int(rng.integers(len(names)))]]
  with zipfile.ZipFile(path, "w") as zf:
    for n, raw in members.items():
      zf.writestr(n, bytes(raw))


def make_torch_zips(folder: str, count: int, seed: int) -> list[str]:
  rng = np.random.default_rng(seed)
  paths = []
  for i in range(count):
    path = os.path.join(folder, f"{i:04d}.pth")
    kind = rng.integers(4)
    if kind == 0:
      sd = collections.OrderedDict(_tiny_state_dict(rng))
      write_torch_zip(path, sd, fortran=bool(rng.integers(2)))
    elif kind == 1:
      tensors = {f"w{j}": _random_view(rng) for j in range(int(rng.integers(1, 4)))}
      storages = {"0": rng.standard_normal(int(rng.choice([0, 1, 16, 1000]))).astype(
          rng.choice([np.float32, np.float64, np.float16])).tobytes()}
      write_crafted_zip(path, tensors, storages,
                        storage_type=str(rng.choice(["FloatStorage", "DoubleStorage",
                                                     "HalfStorage", "LongStorage", "BoolStorage"])))
    elif kind == 2:
      write_malicious_zip(path, "true")
    else:
      write_torch_zip(path, {"state_dict": _tiny_state_dict(rng), "model_args": {"sr": 44100}})
    mutation = rng.integers(4)
    if mutation == 1:
      _rewrite_member(path, rng)
    elif mutation == 2:
      raw = _mutate(bytearray(open(path, "rb").read()), rng)
      with open(path, "wb") as f:
        f.write(bytes(raw))
    paths.append(path)
  return paths


def run_batches(kind: str, paths: list[str], folder: str) -> list[dict]:
  """Runs ``fuzz_worker.py`` over ``paths`` in BATCHES processes; returns the outcome rows."""
  rows = []
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO + os.pathsep + HERE}
  for b in range(BATCHES):
    part = paths[b::BATCHES]
    listing, out = os.path.join(folder, f"{kind}{b}.txt"), os.path.join(folder, f"{kind}{b}.jsonl")
    with open(listing, "w") as f:
      f.write("\n".join(part) + "\n")
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "fuzz_worker.py"), kind, listing, out,
         str(MEMORY_LIMIT_GB), str(SECONDS_PER_FILE)],
        capture_output=True, text=True, env=env, cwd=REPO,
        timeout=SECONDS_PER_FILE * 4 + 2 * len(part))
    lines = [json.loads(l) for l in open(out).read().splitlines()] if os.path.exists(out) else []
    done = [l for l in lines if "outcome" in l]
    started = [l["start"] for l in lines if "start" in l]
    assert proc.returncode == 0, (
        f"{kind} worker died with {proc.returncode} while reading {started[-1:]}: "
        f"{proc.stderr[-2000:]}")
    assert len(done) == len(part)
    rows += done
  return rows


def _check(rows: list[dict]) -> collections.Counter:
  bad = [r for r in rows if r["outcome"] not in ("ok", "refused")]
  assert not bad, "\n".join(f"{r['path']}: {r['outcome']}: {r['message']}" for r in bad[:10])
  peak = max(r["rss_mb"] for r in rows)
  assert peak <= MAX_RSS_MB, f"peak RSS {peak:.0f} MB"
  return collections.Counter(r["outcome"] for r in rows)


def test_fuzzed_audio_is_read_or_refused_in_bounded_memory_and_time(tmp_path):
  paths = make_audio_files(str(tmp_path), AUDIO_FILES, SEED)
  counts = _check(run_batches("audio", paths, str(tmp_path)))
  assert sum(counts.values()) == AUDIO_FILES
  assert counts["ok"] > 0.05 * AUDIO_FILES and counts["refused"] > 0.3 * AUDIO_FILES, counts


def test_fuzzed_torch_zips_are_loaded_or_refused(tmp_path):
  paths = make_torch_zips(str(tmp_path), TORCH_ZIPS, SEED)
  counts = _check(run_batches("zip", paths, str(tmp_path)))
  assert sum(counts.values()) == TORCH_ZIPS
  assert counts["ok"] > 0 and counts["refused"] > 0.3 * TORCH_ZIPS, counts
