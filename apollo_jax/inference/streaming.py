"""Real-time streaming restoration: one hop of samples in, one hop of restored samples out.

The offline model (:class:`apollo_jax.model.Apollo`) frames the whole signal with a centred
STFT (window ``n_fft``, hop ``n_fft / 2``, reflect padding of ``n_fft / 2`` at both ends).
The streaming equivalent, frame by frame:

* Analysis frame t covers samples ``[(t - 1) hop, (t + 1) hop)``, so it is complete once
  input hop t has arrived. Frame 0 reaches back into the reflect padding: it is
  ``[x[hop], x[hop-1], ..., x[1], x[0], ..., x[hop-1]]``, and its first sample ``x[hop]``
  meets the zero of the periodic Hann window, so frame 0 needs only hop 0 as well.
* The network runs on that one frame. The band transformer works inside a frame; each TCN
  depthwise conv keeps its last ``kernel - 1`` input frames in the state. With a causal
  model (``ApolloConfig(causal=True)``) frame t's output needs frames <= t only. The
  published (non-causal) weights look ``(kernel - 1) / 2`` frames ahead per TCN unit; the
  stream then delays each unit by that much (lookahead mode, :func:`lookahead_frames`):
  ``3 x 3 x layers`` frames = 54 frames = 540 ms for the paper model.
* Synthesis overlap-adds the windowed inverse FFT of consecutive output frames and divides
  by the overlap-added squared window, exactly as the offline inverse STFT does inside the
  signal. Output hop b needs output frames b and b + 1.

Hence after feeding hop s, :func:`step` returns output hop ``s - 1 - D`` (D = lookahead
frames; zeros while that is negative): the output stream is the offline output delayed by
``delay_samples(cfg) = (D + 1) hop`` samples (441 = 10 ms causal at 44.1 kHz), and with the
hop of buffering the end-to-end algorithmic latency is :func:`latency_samples` ``=
(D + 2) hop`` (882 samples = 20 ms causal, one window; 56 hops = 560 ms for the published
paper model, 20 hops = 200 ms for 64/2). Every sample :func:`step` returns equals the
offline output of the whole signal, whatever follows (up to float rounding of the per-frame
matmuls). Only the last ``(D + 1) hop + r`` samples depend on the reflect padding at the
end of the signal; :func:`finish` computes them from the last ``r < hop`` samples, so
steps + finish reproduce the offline output of any signal longer than ``n_fft / 2``.

Arrays: input and output hops are float32 ``(batch, channels, hop)``; channels are
independent streams (folded into the batch, as in the offline model).
"""

from __future__ import annotations

import sys
import time
from typing import BinaryIO, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from apollo_jax import audio, spectral
from apollo_jax.config import ApolloConfig
from apollo_jax.model import BandMerge, BandRoformer, BandSplit, TemporalUnit, time_conv_left_pad

_NO_END = np.iinfo(np.int32).max


def lookahead_frames(cfg: ApolloConfig) -> int:
  """Future frames the network needs: 0 causal, ``layers x units x (kernel - 1) / 2`` otherwise."""
  per_unit = cfg.tcn_kernel - 1 - time_conv_left_pad(cfg)
  return cfg.num_layers * cfg.tcn_units * per_unit


def delay_samples(cfg: ApolloConfig) -> int:
  """Offset between the stream and the offline output: ``out_stream[n + delay] = offline[n]``."""
  return (lookahead_frames(cfg) + 1) * cfg.hop


def latency_samples(cfg: ApolloConfig) -> int:
  """Algorithmic latency from an input sample's arrival to its restored output: delay + one hop."""
  return delay_samples(cfg) + cfg.hop


def latency_ms(cfg: ApolloConfig) -> float:
  return 1000.0 * latency_samples(cfg) / cfg.sample_rate


@flax.struct.dataclass
class StreamState:
  """Everything a stream remembers between hops (a pytree; ``cfg`` and shapes are static).

  Attributes:
    inputs: (streams, n_fft) the last two input hops (framing, and the end reflection).
    histories: per TCN unit (layer-major), (streams, kernel - 1, bands, features) its last
      input frames.
    overlap: (streams, hop) second half of the last windowed output frame (overlap-add).
    frame: () int32 index of the next analysis frame (= hops fed so far).
    end: () int32 number of frames of the whole signal once :func:`finish` knows it.
  """

  cfg: ApolloConfig = flax.struct.field(pytree_node=False)
  batch: int = flax.struct.field(pytree_node=False)
  channels: int = flax.struct.field(pytree_node=False)
  inputs: jnp.ndarray
  histories: tuple
  overlap: jnp.ndarray
  frame: jnp.ndarray
  end: jnp.ndarray


def init_state(cfg: ApolloConfig, batch: int, channels: int) -> StreamState:
  """A fresh stream state for ``batch x channels`` independent channels.

  Causal configs stream exactly with latency one window; non-causal configs (the published
  weights) stream in lookahead mode (see :func:`latency_samples`).
  """
  if batch < 1 or channels < 1:
    raise ValueError(f"batch and channels must be >= 1, got batch={batch}, channels={channels}")
  if cfg.residual and not cfg.causal:
    raise ValueError("streaming a residual model needs causal=True (lookahead mode would "
                     "have to delay the input spectrum too)")
  streams = batch * channels
  hist = jnp.zeros((streams, cfg.tcn_kernel - 1, cfg.num_bands, cfg.feature_dim), jnp.float32)
  units = cfg.num_layers * cfg.tcn_units
  return StreamState(
      cfg=cfg, batch=batch, channels=channels,
      inputs=jnp.zeros((streams, cfg.n_fft), jnp.float32),
      histories=tuple(hist for _ in range(units)),
      overlap=jnp.zeros((streams, cfg.hop), jnp.float32),
      frame=jnp.zeros((), jnp.int32), end=jnp.full((), _NO_END, jnp.int32))


def reset(state: StreamState) -> StreamState:
  """The state of a new stream with the same config and shape (forget all history)."""
  return init_state(state.cfg, state.batch, state.channels)


def _network(params, state: StreamState, spec: jnp.ndarray):
  """One analysis frame through the generator.

  Args:
    spec: (streams, bins, 1) complex spectrum of analysis frame ``state.frame``.

  Returns:
    ((streams, bins, 1) output spectrum of frame ``state.frame - D``, new TCN histories).
  """
  cfg = state.cfg
  left = time_conv_left_pad(cfg)
  per_unit = cfg.tcn_kernel - 1 - left
  h = BandSplit(cfg).apply({"params": params["band_split"]}, spec)  # (streams, 1, bands, features)
  histories = []
  g = 0
  for layer in range(cfg.num_layers):
    block = params[f"block_{layer}"]
    h = BandRoformer(cfg).apply({"params": block["band"]}, h)
    for u in range(cfg.tcn_units):
      # Unit g receives frame `frame - g * per_unit`; frames outside the signal are the
      # offline conv's zero padding.
      idx = state.frame - g * per_unit
      h = jnp.where((idx >= 0) & (idx < state.end), h, 0.0)
      window = jnp.concatenate([state.histories[g], h], axis=1)  # (streams, kernel, bands, features)
      histories.append(window[:, 1:])
      h = TemporalUnit(cfg).apply({"params": block[f"time_{u}"]}, window, left,
                                  method=TemporalUnit.on_window)
      g += 1
  est = BandMerge(cfg).apply({"params": params["band_merge"]}, h)
  if cfg.residual:  # Causal only (checked in init_state): the output frame is this frame.
    est = est + spec
  return est, tuple(histories)


def _advance(params, state: StreamState, frame: jnp.ndarray):
  """Analysis frame samples (streams, n_fft) -> (state, (streams, hop) output hop)."""
  cfg = state.cfg
  hop = cfg.hop
  est, histories = _network(params, state, spectral.analysis_frames(frame[:, None, :]))
  wave = spectral.synthesis_frames(est, cfg.n_fft)[:, 0]  # (streams, n_fft)
  emitted = state.frame - lookahead_frames(cfg)  # index of the output frame in `est`
  wave = jnp.where(emitted >= 0, wave, 0.0)
  env = spectral.window_envelope(cfg.n_fft, hop, 2)[hop:2 * hop]  # two frames overlap
  out = jnp.where(emitted >= 1, (state.overlap + wave[:, :hop]) / env, 0.0)
  state = state.replace(histories=histories, overlap=wave[:, hop:], frame=state.frame + 1)
  return state, out


def _streams(state: StreamState, block: jnp.ndarray, what: str, samples: int | None) -> jnp.ndarray:
  want = (state.batch, state.channels)
  if block.ndim != 3 or block.shape[:2] != want or (samples is not None and block.shape[2] != samples):
    raise ValueError(
        f"{what} must be (batch, channels, samples) = ({want[0]}, {want[1]}, "
        f"{samples if samples is not None else '<hop'}), got shape {tuple(block.shape)}")
  return block.reshape(state.batch * state.channels, block.shape[2]).astype(jnp.float32)


@jax.jit
def step(params, state: StreamState, hop_block: jnp.ndarray) -> tuple[StreamState, jnp.ndarray]:
  """Feeds one hop and returns one hop (jit-compiled; pass params as jax arrays).

  Args:
    params: generator parameters (the same tree as the offline model).
    state: from :func:`init_state` or the previous step.
    hop_block: (batch, channels, hop) float32, the next ``cfg.hop`` input samples.

  Returns:
    ``(state, out)`` with ``out`` (batch, channels, hop): the offline output delayed by
    :func:`delay_samples` (zeros during the first ``lookahead_frames + 1`` hops).
  """
  cfg = state.cfg
  hop = cfg.hop
  x = _streams(state, hop_block, "hop_block", hop)
  # Frame 0 is the centred frame over the reflect padding; its first sample is x[hop],
  # not known yet, and it meets the window's zero, so any value does.
  first = jnp.concatenate([jnp.zeros_like(x[:, :1]), x[:, :0:-1]], axis=1)
  prev = jnp.where(state.frame == 0, first, state.inputs[:, hop:])
  inputs = jnp.concatenate([state.inputs[:, hop:], x], axis=1)
  state, out = _advance(params, state.replace(inputs=inputs), jnp.concatenate([prev, x], axis=1))
  return state, out.reshape(state.batch, state.channels, hop)


def finish(params, state: StreamState, tail: jnp.ndarray) -> jnp.ndarray:
  """Ends the stream: the remaining ``delay_samples + r`` output samples.

  Runs the end-reflected last frame and the ``lookahead_frames`` flush frames through the
  same compiled :func:`step`.

  Args:
    tail: (batch, channels, r) the last ``0 <= r < hop`` input samples.

  Returns:
    (batch, channels, delay_samples(cfg) + r): with every :func:`step` output before it, the
    offline output of the whole signal preceded by ``delay_samples`` zeros. The state is used
    up; start the next stream with :func:`reset`.
  """
  cfg = state.cfg
  hop = cfg.hop
  tail = jnp.asarray(tail)
  if tail.ndim == 3 and tail.shape[2] >= hop:
    raise ValueError(f"tail must hold fewer than hop={hop} samples, got {tail.shape[2]}; "
                     f"feed whole hops with step()")
  x = np.asarray(_streams(state, tail, "tail", None))
  r = x.shape[1]
  frames = int(state.frame)
  if frames * hop + r <= cfg.n_fft // 2:
    raise ValueError(f"a stream needs more than {cfg.n_fft // 2} samples (the STFT reflect "
                     f"padding), got {frames * hop + r}")
  # The last frame (index `frames`) covers the previous hop and the tail, then the offline
  # reflect padding of the end; as a hop block it is the tail continued by its reflection.
  seg = np.concatenate([np.asarray(state.inputs), x], axis=1)  # from sample (frames - 2) hop
  last = np.pad(seg, [(0, 0), (0, hop)], mode="reflect")[:, 2 * hop:3 * hop]
  state = state.replace(end=jnp.asarray(frames + 1, jnp.int32))
  shape = (state.batch, state.channels, hop)
  outs = []
  for block in [last] + [np.zeros_like(last)] * lookahead_frames(cfg):
    state, out = step(params, state, block.reshape(shape))
    outs.append(out)
  # The last r samples are covered by the second half of the last frame only.
  env = spectral.window_envelope(cfg.n_fft, hop, 1)[hop:hop + r]
  outs.append((state.overlap[:, :r] / env).reshape(state.batch, state.channels, r))
  return jnp.concatenate(outs, axis=2)


def stream_array(cfg: ApolloConfig, params, x: np.ndarray) -> np.ndarray:
  """Restores ``x`` (batch, channels, samples) hop by hop; the result is aligned with ``x``.

  Equals ``Apollo(cfg).apply({"params": params}, x)`` up to float rounding.
  """
  x = np.asarray(x, np.float32)
  if x.ndim != 3:
    raise ValueError(f"expected (batch, channels, samples), got shape {x.shape}")
  params = jax.device_put(params)
  state = init_state(cfg, x.shape[0], x.shape[1])
  hop, full = cfg.hop, x.shape[2] // cfg.hop
  outs = []
  for s in range(full):
    state, out = step(params, state, x[:, :, s * hop:(s + 1) * hop])
    outs.append(np.asarray(out))
  outs.append(np.asarray(finish(params, state, x[:, :, full * hop:])))
  return np.concatenate(outs, axis=2)[:, :, delay_samples(cfg):]


def stream_file(cfg: ApolloConfig, params, in_path: str, out_path: str,
                announce: Callable[[], None] | None = None) -> dict:
  """Restores an audio file hop by hop through :func:`step` (any format :mod:`audio` reads).

  The input is resampled to ``cfg.sample_rate``; the output (same length, WAV or FLAC) is
  written at that rate. ``announce`` is called once the input has been read (a bad input
  fails before it). Returns hops, seconds of audio and the mean wall time per hop
  (compilation included).
  """
  x, rate = audio.load(in_path, cfg.sample_rate)
  if announce is not None:
    announce()
  start = time.perf_counter()
  y = stream_array(cfg, params, x[None])[0]
  elapsed = time.perf_counter() - start
  audio.save(out_path, y, rate)
  hops = x.shape[1] // cfg.hop + 1
  return {"hops": hops, "seconds": x.shape[1] / rate, "wall_ms_per_hop": 1000 * elapsed / hops,
          "latency_ms": latency_ms(cfg)}


def _read_exact(stream: BinaryIO, size: int) -> bytes:
  """Reads ``size`` bytes, fewer only at end of stream (pipes return short reads)."""
  chunks, got = [], 0
  while got < size:
    chunk = stream.read(size - got)
    if not chunk:
      break
    chunks.append(chunk)
    got += len(chunk)
  return b"".join(chunks)


def stream_stdio(cfg: ApolloConfig, params, channels: int, stdin: BinaryIO | None = None,
                 stdout: BinaryIO | None = None, aligned: bool = True) -> int:
  """Restores raw PCM from ``stdin`` to ``stdout`` as it arrives.

  Both carry interleaved little-endian float32 samples (``f32le``) at ``cfg.sample_rate``
  with ``channels`` channels. Each hop of input is answered by one hop of output as soon as
  it is read. ``aligned`` drops the ``delay_samples`` leading zeros so that output sample i
  is the restoration of input sample i (same total length); otherwise they are written (a
  constant delay, as a live device sees it). At end of input the stream is finished.

  Returns:
    the number of input samples (per channel) read.

  Raises:
    ValueError: the input ends inside a sample frame, or holds a NaN or Inf sample.
  """
  stdin = stdin or sys.stdin.buffer
  stdout = stdout or sys.stdout.buffer
  params = jax.device_put(params)
  hop = cfg.hop
  bytes_per_hop = 4 * channels * hop
  state = init_state(cfg, 1, channels)
  skip = delay_samples(cfg) if aligned else 0
  read = 0

  def emit(out: jnp.ndarray):
    nonlocal skip
    y = np.asarray(out)[0].T  # (samples, channels)
    drop = min(skip, y.shape[0])
    skip -= drop
    if y.shape[0] > drop:
      stdout.write(np.ascontiguousarray(y[drop:], "<f4").tobytes())
      stdout.flush()

  while True:
    data = _read_exact(stdin, bytes_per_hop)
    if len(data) % (4 * channels):
      raise ValueError(f"input ended inside a sample frame: {len(data)} bytes is not a multiple "
                       f"of 4 bytes x {channels} channels")
    block = np.frombuffer(data, "<f4").reshape(-1, channels).T[None]
    if not np.isfinite(block).all():  # one NaN would smear over the whole receptive field
      bad = int(np.argmin(np.isfinite(block).all(axis=1)[0]))
      raise ValueError(f"raw PCM input sample {read + bad} is NaN or Inf; the stream stops "
                       f"here ({read + bad} samples per channel were restored)")
    read += block.shape[2]
    if block.shape[2] < hop:
      emit(finish(params, state, block))
      return read
    state, out = step(params, state, block)
    emit(out)
