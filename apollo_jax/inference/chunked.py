"""Chunked restoration: restore audio of any length in bounded memory.

The generator comes from :func:`apollo_jax.checkpoints.load_generator`.

Chunked restoration (:class:`ChunkedRestorer`, :func:`restore_array`)
--------------------------------------------------------------------
Each channel is cut into chunks of a fixed ``chunk`` samples that start every
``chunk - overlap`` samples; the last chunk is moved back to end at the end of the input
(rounded up to the STFT hop; the < hop samples past the end are the input mirrored at its
end, as the STFT's own reflect padding would see them). Chunk
length and overlap are rounded to whole STFT hops so every chunk sees the same frame grid
as the whole file. Chunks of all channels go through the model in batches of
``batch_chunks`` (the last batch padded with silent chunks), so the model compiles once per
``(batch_chunks, chunk)`` whatever the input length. An input shorter than one chunk is
restored whole instead (padding it to a chunk would change its ending; this compiles once
per distinct short length).

Crossfade: where two chunks overlap, the outer quarter of the overlap on each side is
dropped (the samples nearest a chunk edge, where the network saw the padding of the chunk
instead of the real neighbours), and over the middle half the earlier chunk fades out with
``cos^2`` while the later one fades in with ``sin^2`` of ``pi/2 * (t + 0.5) / fade``; the
two weights sum to exactly 1, so a signal both chunks agree on passes unchanged. With
``overlap = 0`` chunks are butted together.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from apollo_jax.audio import AudioError
from apollo_jax.config import ApolloConfig
from apollo_jax.model import init_params, jit_forward

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CHUNK_SECONDS", "DEFAULT_OVERLAP_SECONDS", "ChunkedRestorer", "restore_array",
    "select_device",
]

# At the paper config on CPU each second of mono audio in a chunk adds about 200 MB to the
# peak memory of the forward pass (1.5 GB for the whole process at 5 s, 2.1 GB at 8 s);
# 4 s keeps the process under 1.5 GB (bench/restore.py).
DEFAULT_CHUNK_SECONDS = 4.0
# Measured at the paper config (random weights, 8 s of music, 3 s chunks), chunked vs
# whole: overlap 0.1 s -> 44 dB SNR, 0.25 s -> 75 dB, 0.5 s -> 118 dB, 1 s -> 147 dB.
# 0.25 s is far below audibility and recomputes under 7% of the audio with 4 s chunks.
DEFAULT_OVERLAP_SECONDS = 0.25

# ---------------------------------------------------------------------------------------
# Devices and the compiled forward


def select_device(name: str = "auto") -> jax.Device:
  """``"auto"`` (JAX's default backend), ``"cpu"``, ``"gpu"`` or ``"tpu"`` -> a device."""
  if name == "auto":
    return jax.devices()[0]
  if name not in ("cpu", "gpu", "tpu"):
    raise ValueError(f"unknown device {name!r}; expected auto, cpu, gpu or tpu")
  try:
    return jax.devices(name)[0]
  except RuntimeError:
    raise ValueError(
        f"no {name} device is available to JAX (default backend here: "
        f"{jax.default_backend()}); use --device auto or cpu") from None


@functools.lru_cache(maxsize=16)
def _compiled_forward(cfg: ApolloConfig, shape: tuple[int, int, int], device: jax.Device):
  """The generator compiled ahead of time for inputs ``shape`` = (batch, channels, samples)
  on ``device``; cached, so each shape compiles once per process."""
  sharding = jax.sharding.SingleDeviceSharding(device)
  spec = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)
  params = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
  return jit_forward(cfg).lower(jax.tree.map(lambda a: spec(a.shape), params), spec(shape)).compile()


# ---------------------------------------------------------------------------------------
# Chunked overlap-add


@functools.lru_cache(maxsize=16)
def _fade_in(length: int) -> np.ndarray:
  """``sin^2(pi/2 (t + 0.5) / length)``, t = 0..length-1; ``1 - fade_in`` is the fade-out."""
  return (np.sin(0.5 * np.pi * (np.arange(length) + 0.5) / length) ** 2).astype(np.float32)


class _OverlapAdd:
  """Joins restored chunks ``(channels, chunk)`` at increasing starts into one stream."""

  def __init__(self, chunk: int):
    self.chunk = chunk
    self.prev: tuple[int, np.ndarray] | None = None
    self.done = 0  # output samples already emitted

  def add(self, start: int, y: np.ndarray) -> np.ndarray | None:
    """Takes the chunk at ``start``; returns the output that is now final (or None)."""
    if self.prev is None:
      self.prev = (start, y)
      return None
    p, py = self.prev
    overlap = p + self.chunk - start
    # Drop the outer quarters of the overlap, fade over the middle half; never start before
    # what is already out (overlaps over half a chunk make consecutive zones meet).
    c0 = max(start + overlap // 4, self.done)
    c1 = max(c0, start + overlap - overlap // 4)
    w = _fade_in(c1 - c0) if c1 > c0 else np.zeros(0, np.float32)
    mixed = py[:, c0 - p:c1 - p] * (1 - w) + y[:, c0 - start:c1 - start] * w
    out = np.concatenate([py[:, self.done - p:c0 - p], mixed], axis=1)
    self.prev, self.done = (start, y), c1
    return out

  def finish(self, total: int) -> np.ndarray:
    p, py = self.prev
    return py[:, self.done - p:total - p]


class ChunkedRestorer:
  """Restores audio chunk by chunk with a model compiled once (see the module docstring).

  Args:
    cfg, params: the generator (e.g. from :func:`load_generator`).
    chunk_seconds: chunk length; None processes each input whole (one compile per length).
    overlap_seconds: overlap of consecutive chunks, less than ``chunk_seconds``.
    batch_chunks: chunks per model call (mono chunks of any channel).
    device: where the model runs (default: JAX's default device).
  """

  def __init__(self, cfg: ApolloConfig, params: Mapping,
               chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
               overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: int = 1,
               device: jax.Device | None = None):
    self.cfg = cfg
    self.device = device or jax.devices()[0]
    as_f32 = lambda a: a if getattr(a, "dtype", None) == np.float32 else np.asarray(a, np.float32)
    self.params = jax.device_put(jax.tree.map(as_f32, dict(params)), self.device)
    self.batch = int(batch_chunks)
    if self.batch < 1:
      raise ValueError(f"batch_chunks must be >= 1, got {batch_chunks}")
    self.chunk = self.overlap = None
    if chunk_seconds is not None:
      hop, rate = cfg.hop, cfg.sample_rate
      if not chunk_seconds > 0 or not overlap_seconds >= 0:
        raise ValueError(f"need chunk_seconds > 0 and overlap_seconds >= 0, got "
                         f"{chunk_seconds} and {overlap_seconds}")
      self.chunk = max(1, round(chunk_seconds * rate / hop)) * hop
      self.overlap = round(overlap_seconds * rate / hop) * hop
      if self.chunk < cfg.n_fft or self.overlap >= self.chunk:
        raise ValueError(
            f"chunk_seconds={chunk_seconds} must be at least one STFT window "
            f"({cfg.n_fft / rate:.3f} s) and longer than overlap_seconds={overlap_seconds}")
    self.compile_seconds = 0.0  # time spent compiling so far (each shape once per process)

  def _model(self, shape: tuple[int, int, int]):
    t = time.perf_counter()
    fn = _compiled_forward(self.cfg, shape, self.device)
    self.compile_seconds += time.perf_counter() - t
    return fn

  @property
  def step(self) -> int:
    """Samples between the starts of consecutive chunks."""
    return self.chunk - self.overlap

  def compile(self) -> float:
    """Compiles the chunk forward now instead of on first use; returns the seconds taken."""
    t = time.perf_counter()
    if self.chunk is not None:
      self._model((self.batch, 1, self.chunk))
    return time.perf_counter() - t

  def num_chunks(self, samples: int) -> int:
    """Chunks (per channel) an input of ``samples`` samples is cut into (1 when whole)."""
    if self.chunk is None or samples <= self.chunk:
      return 1
    regular = (samples - self.chunk) // self.step + 1
    return regular + ((regular - 1) * self.step + self.chunk < samples)

  def _check_length(self, total: int) -> None:
    if total < self.cfg.n_fft:
      raise AudioError(
          f"input is {total} samples at {self.cfg.sample_rate} Hz, shorter than one STFT "
          f"window ({self.cfg.n_fft} samples = {self.cfg.win_ms:g} ms)")

  def restore(self, blocks: Iterable[np.ndarray],
              progress: Callable[[int], Any] | None = None) -> Iterator[np.ndarray]:
    """Restores a stream of ``(channels, samples)`` float32 blocks at the model rate.

    Yields ``(channels, m)`` blocks that concatenate to the restored audio (same length as
    the input). Memory stays bounded by a few chunks whatever the input length (unless
    ``chunk_seconds`` is None). ``progress(n)`` is called as ``n`` more chunks finish.

    Raises:
      AudioError: no samples, or fewer than one STFT window.
    """
    if self.chunk is None:
      yield self._restore_whole(blocks)
      if progress:
        progress(1)
      return
    L, S, hop = self.chunk, self.step, self.cfg.hop
    ola = _OverlapAdd(L)
    buf, buf_start, total = None, 0, 0
    next_start, last_start = 0, None
    queue: list[tuple[int, int, np.ndarray]] = []  # (chunk index, channel, samples (L,))
    starts: list[int] = []
    results: dict[int, list] = {}
    emitted = 0  # chunks handed to the overlap-add

    def form(start: int) -> None:
      seg = buf[:, start - buf_start:start - buf_start + L]
      if seg.shape[1] < L:  # final chunk, < hop short: mirror the end like the STFT does
        seg = np.pad(seg, ((0, 0), (0, L - seg.shape[1])), mode="reflect")
      k = len(starts)
      starts.append(start)
      results[k] = [None] * seg.shape[0]
      queue.extend((k, c, seg[c]) for c in range(seg.shape[0]))

    def run(flush: bool) -> Iterator[np.ndarray]:
      nonlocal emitted
      while len(queue) >= self.batch or (flush and queue):
        items, queue[:self.batch] = queue[:self.batch], []
        x = np.zeros((self.batch, 1, L), np.float32)
        for i, (_, _, seg) in enumerate(items):
          x[i, 0] = seg
        model = self._model((self.batch, 1, L))
        y = np.asarray(model(self.params, jax.device_put(x, self.device)))
        for i, (k, c, _) in enumerate(items):
          results[k][c] = y[i, 0]
        while emitted in results and all(r is not None for r in results[emitted]):
          out = ola.add(starts[emitted], np.stack(results.pop(emitted)))
          emitted += 1
          if progress:
            progress(1)
          if out is not None and out.shape[1]:
            yield out

    for block in blocks:
      block = np.asarray(block, np.float32)
      if block.ndim != 2:
        raise ValueError(f"expected (channels, samples) blocks, got shape {block.shape}")
      if buf is None:
        buf = np.zeros((block.shape[0], 0), np.float32)
      elif block.shape[0] != buf.shape[0]:
        raise ValueError(f"block has {block.shape[0]} channels, earlier ones {buf.shape[0]}")
      buf = np.concatenate([buf, block], axis=1)
      total += block.shape[1]
      while buf_start + buf.shape[1] >= next_start + L:
        form(next_start)
        last_start, next_start = next_start, next_start + S
        # The final chunk starts after last_start: older samples are no longer needed.
        buf, buf_start = buf[:, last_start - buf_start:], last_start
        yield from run(flush=False)
    if total == 0:
      raise AudioError("input contains no audio samples")
    self._check_length(total)
    if last_start is None:  # shorter than one chunk: exact, at the cost of a compile per length
      yield self._restore_whole([buf])
      if progress:
        progress(1)
      return
    if last_start + L < total:
      form(math.ceil((total - L) / hop) * hop)
    yield from run(flush=True)
    out = ola.finish(total)
    if out.shape[1]:
      yield out

  def _restore_whole(self, blocks: Iterable[np.ndarray]) -> np.ndarray:
    blocks = [np.asarray(b, np.float32) for b in blocks]
    if not blocks or not sum(b.shape[1] for b in blocks):
      raise AudioError("input contains no audio samples")
    audio = np.concatenate(blocks, axis=1)
    self._check_length(audio.shape[1])
    model = self._model((1,) + audio.shape)
    return np.asarray(model(self.params, jax.device_put(audio[None], self.device))[0])

  def restore_array(self, audio: np.ndarray,
                    progress: Callable[[int], Any] | None = None) -> np.ndarray:
    """``(channels, samples)`` at the model rate -> restored ``(channels, samples)``."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 2:
      raise ValueError(f"expected audio of shape (channels, samples), got {audio.shape}")
    return np.concatenate(list(self.restore([audio], progress)), axis=1)


def restore_array(params: Mapping, cfg: ApolloConfig, audio: np.ndarray,
                  chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
                  overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: int = 1,
                  device: jax.Device | None = None,
                  progress: Callable[[int], Any] | None = None) -> np.ndarray:
  """Restores ``audio`` float32 ``(channels, samples)`` at ``cfg.sample_rate``.

  Chunked overlap-add as in the module docstring (``chunk_seconds=None``: the whole input
  in one forward pass). The compiled model is cached per (config, chunk shape, device), so
  calling this for many files compiles once. Returns ``(channels, samples)`` float32.
  """
  restorer = ChunkedRestorer(cfg, params, chunk_seconds, overlap_seconds, batch_chunks, device)
  return restorer.restore_array(audio, progress)
