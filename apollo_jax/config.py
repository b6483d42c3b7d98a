"""Architecture configuration of the Apollo generator."""

from __future__ import annotations

import dataclasses
import json
import numbers
from typing import Any, Mapping


class JsonConfig:
  """Dict / JSON round trip of a frozen config dataclass; unknown fields are an error."""

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=1, sort_keys=True)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]):
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**d)

  @classmethod
  def from_json(cls, text: str):
    return cls.from_dict(json.loads(text))


@dataclasses.dataclass(frozen=True)
class ApolloConfig(JsonConfig):
  """Hyperparameters of the generator. Defaults are the paper / published release.

  Attributes:
    sample_rate: audio sample rate in Hz.
    win_ms: STFT window in milliseconds; ``n_fft = int(sample_rate * win_ms // 1000)``.
    feature_dim: width N of every band feature.
    num_layers: number of band-sequence blocks (B in the paper).
    num_heads: attention heads of the band transformer.
    num_bands: number of frequency bands (all of ``n_fft // 160`` bins but the last).
    tcn_units: residual units of the temporal convolution network in each block.
    tcn_kernel: depthwise kernel size over time.
    causal: pad the time convolutions on the left only (streaming); the published
      model is not causal.
    residual: add the predicted spectrum to the input spectrum (the output layer starts at
      zero, so the untrained model is the identity). Not in the published model (which
      predicts the spectrum directly); used by the small CPU demo to learn fast.
    chunk_rows: run the position-wise layers (band transformer, TCN MLPs) over about this
      many (stream, frame) rows at a time, so their wide hidden activations stay in cache
      and memory stays bounded; 0 = all at once; -1 (default) = 8 on CPU, 0 on GPU/TPU. A
      chunk is every stream (batch x channel) over ``max(1, chunk_rows // streams)``
      frames, so a batch sharded over devices stays split. Only a memory/speed trade-off:
      results are the same.
    remat: training memory: recompute every band-transformer and TCN sub-block from its
      input in the backward pass, so each saves only its input (about a third more
      generator compute). With row chunking (``chunk_rows``, the CPU default) the
      position-wise layers are recomputed per chunk anyway, except the outputs of their
      widest matmuls (the band MLP's and each TCN unit's first), which are saved unless
      ``remat``; ``remat`` also makes each TCN unit keep only its input.
    compute_dtype: dtype of the matmul inputs ("float32" or "bfloat16"); parameters,
      norms and spectral transforms stay float32.
  """

  sample_rate: int = 44100
  win_ms: float = 20
  feature_dim: int = 256
  num_layers: int = 6
  num_heads: int = 8
  num_bands: int = 80
  tcn_units: int = 3
  tcn_kernel: int = 7
  causal: bool = False
  residual: bool = False
  chunk_rows: int = -1
  remat: bool = False
  compute_dtype: str = "float32"

  def __post_init__(self):
    for name in ("sample_rate", "feature_dim", "num_layers", "num_heads", "num_bands",
                 "tcn_units", "tcn_kernel"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(self.win_ms, bool) or not isinstance(self.win_ms, numbers.Real) or not self.win_ms > 0:
      raise ValueError(f"win_ms must be a positive number, got {self.win_ms!r}")
    if self.feature_dim % self.num_heads:
      raise ValueError(f"feature_dim={self.feature_dim} is not divisible by num_heads={self.num_heads}")
    if (self.feature_dim // self.num_heads) % 2:
      raise ValueError(f"head dim {self.feature_dim // self.num_heads} must be even for rotary embeddings")
    if self.compute_dtype not in ("float32", "bfloat16"):
      raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {self.compute_dtype!r}")
    widths = self.band_widths  # validates the band split
    del widths

  @property
  def n_fft(self) -> int:
    """STFT window and FFT length (882 at 44.1 kHz / 20 ms)."""
    return int(self.sample_rate * self.win_ms // 1000)

  @property
  def hop(self) -> int:
    return self.n_fft // 2

  @property
  def num_bins(self) -> int:
    return self.n_fft // 2 + 1

  @property
  def band_widths(self) -> tuple[int, ...]:
    """Bins per band: ``num_bands - 1`` bands of ``int(n_fft / 160)`` bins, then the rest."""
    bw = int(self.n_fft / 160)
    rest = self.num_bins - bw * (self.num_bands - 1)
    if bw < 1 or rest < 1:
      raise ValueError(
          f"n_fft={self.n_fft} (sample_rate={self.sample_rate}, win_ms={self.win_ms}) is too "
          f"small for {self.num_bands} bands")
    return (bw,) * (self.num_bands - 1) + (rest,)

  @property
  def head_dim(self) -> int:
    return self.feature_dim // self.num_heads

