"""The Apollo generator (paper section II) as Flax Linen modules.

Layout: inside the network every tensor is ``(streams, frames, bands, features)`` with the
feature axis last, so each 1x1 convolution of the published model is one matmul over the
last axis and the elementwise work around it fuses. ``streams`` is batch x channels:
channels are restored independently, as in the published model.

The 79 equal-width bands of the split and merge layers are handled by one batched einsum
(one op for all of them, not 79), the wider last band by its own matmul.

Intermediates are sown into the ``intermediates`` collection (free unless it is made
mutable): ``spectrum``, ``band_features``, ``block_<l>/output`` and ``est_spectrum``;
``band_split/band_power`` holds the band gains and ``block_<l>/band/attention`` the
attention weights across bands.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from apollo_jax import spectral
from apollo_jax.config import ApolloConfig
from apollo_jax.layers import (add_bias, apply_rotary, dense, einsum, map_rows, rms_norm, rotary_tables,
                               sum_leading, torch_uniform)

EPS = float(np.finfo(np.float32).eps)


class BandSplit(nn.Module):
  """Band split and bottleneck (paper II-B).

  Maps the complex spectrum ``(streams, bins, frames)`` to band features
  ``(streams, frames, bands, features)``. Each band k gives
  ``[Re X_k / p_k, Im X_k / p_k, log p_k]`` with ``p_k = sqrt(sum |X_k|^2 + eps)``,
  then RMSNorm and a 1x1 conv (with bias) to ``feature_dim``.
  """

  cfg: ApolloConfig

  @staticmethod
  def _features(x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(..., width) complex -> ((..., 2 width + 1) features, (..., 1) band power)."""
    power = jnp.sqrt(jnp.sum(jnp.real(x) ** 2 + jnp.imag(x) ** 2, axis=-1, keepdims=True) + EPS)
    feats = jnp.concatenate([jnp.real(x) / power, jnp.imag(x) / power, jnp.log(power)], axis=-1)
    return feats, power

  @nn.compact
  def __call__(self, spec: jnp.ndarray) -> jnp.ndarray:
    cfg = self.cfg
    widths = cfg.band_widths
    bw, last = widths[0], widths[-1]
    n_eq = len(widths) - 1
    f = cfg.feature_dim
    x = jnp.swapaxes(spec, 1, 2)  # (streams, frames, bins)
    eq = x[..., :n_eq * bw].reshape(*x.shape[:2], n_eq, bw)
    eq_feats, eq_power = self._features(eq)  # (streams, frames, n_eq, 2bw+1)
    last_feats, last_power = self._features(x[..., n_eq * bw:])  # (streams, frames, 2last+1)
    self.sow("intermediates", "band_power",
             jnp.concatenate([eq_power[..., 0], last_power], axis=-1))

    c_eq, c_last = 2 * bw + 1, 2 * last + 1
    eq_norm = self.param("eq_norm", nn.initializers.ones, (n_eq, c_eq))
    eq_kernel = self.param("eq_kernel", torch_uniform(c_eq), (n_eq, c_eq, f))
    eq_bias = self.param("eq_bias", torch_uniform(c_eq), (n_eq, f))
    last_norm = self.param("last_norm", nn.initializers.ones, (c_last,))
    last_kernel = self.param("last_kernel", torch_uniform(c_last), (c_last, f))
    last_bias = self.param("last_bias", torch_uniform(c_last), (f,))

    dt = cfg.compute_dtype
    eq_out = add_bias(einsum("ntkc,kcf->ntkf", rms_norm(eq_feats, eq_norm), eq_kernel, dt), eq_bias)
    last_out = add_bias(dense(rms_norm(last_feats, last_norm), last_kernel, dt), last_bias)
    return jnp.concatenate([eq_out, last_out[:, :, None, :]], axis=2)


def attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, dtype: str) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Scaled dot-product attention across bands, per head (torch's ``scaled_dot_product_attention``
  without a mask, as published).

  ``q, k, v (..., bands, heads, head_dim)`` -> ``(output (..., bands, heads, head_dim),
  weights (..., heads, bands, bands))``; matmuls in ``dtype`` (see ``layers.einsum``).
  """
  logits = einsum("...qhd,...khd->...hqk", q, k, dtype) / math.sqrt(q.shape[-1])
  weights = jax.nn.softmax(logits, axis=-1)
  return einsum("...hqk,...khd->...qhd", weights, v, dtype), weights


class BandRoformer(nn.Module):
  """Transformer across bands (paper II-C), one sequence of bands per (stream, frame).

  ``(streams, frames, bands, features) -> same``. Pre-norm attention with interleaved rotary
  embeddings over the band index, then a gated MLP whose gate passes through SiLU twice
  (as published).
  """

  cfg: ApolloConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    cfg = self.cfg
    f, h, d = cfg.feature_dim, cfg.num_heads, cfg.head_dim
    dt = cfg.compute_dtype
    bands = x.shape[2]

    attn_norm = self.param("attn_norm", nn.initializers.ones, (f,))
    qkv_kernel = self.param("qkv", torch_uniform(f), (f, 3 * f))
    out_kernel = self.param("out", torch_uniform(f), (f, f))
    mlp_norm = self.param("mlp_norm", nn.initializers.ones, (f,))
    mlp_in = self.param("mlp_in", torch_uniform(f), (f, 8 * f))
    mlp_out = self.param("mlp_out", torch_uniform(4 * f), (4 * f, f))

    def rows(x):  # (..., bands, features): every leading index is independent.
      lead = x.shape[:-2]
      # Output channels of qkv are grouped per head: head i owns [q_i, k_i, v_i].
      qkv = dense(rms_norm(x, attn_norm), qkv_kernel, dt).reshape(*lead, bands, h, 3, d)
      q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
      cos, sin = rotary_tables(bands, d)
      q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
      att, weights = attention(q, k, v, dt)
      x = x + dense(att.reshape(*lead, bands, f), out_kernel, dt)
      hidden = dense(rms_norm(x, mlp_norm), mlp_in, dt)
      gate, z = jnp.split(jax.nn.silu(hidden), 2, axis=-1)
      return x + dense(jax.nn.silu(gate) * z, mlp_out, dt), weights

    if self.is_mutable_collection("intermediates"):
      out, weights = rows(x)
      self.sow("intermediates", "attention", weights)
      return out
    # The backward pass recomputes the whole chunk, its matmuls too: keeping their outputs
    # made the step no faster, each variant timed in its own process, and cost 1.2 GiB at
    # paper width, 1 s (docs/training_cost.md, "Process by process").
    return map_rows(lambda r: rows(r)[0], x, cfg.chunk_rows, cfg.remat)


def time_conv_left_pad(cfg: ApolloConfig) -> int:
  """Zero frames padded before the signal by each TCN depthwise conv ("same" or causal)."""
  return cfg.tcn_kernel - 1 if cfg.causal else (cfg.tcn_kernel - 1) // 2


@jax.custom_vjp
def depthwise_time_conv(padded: jnp.ndarray, kernel: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
  """Depthwise conv over frames of an already padded input, a cross-correlation as in torch.

  Args:
    padded: (streams, frames + taps - 1, bands, features).
    kernel: (taps, features); bias: (features,).

  Returns:
    (streams, frames, bands, features) with ``out[t] = sum_j kernel[j] padded[t + j] + bias``.
  """
  return _correlate(padded, kernel) + bias


def _correlate(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """``out[t] = sum_j kernel[j] x[t + j]`` over axis 1: (streams, n, ...) -> (streams, n - taps + 1, ...)."""
  taps = kernel.shape[0]
  frames = x.shape[1] - taps + 1
  return sum(x[:, j:j + frames] * kernel[j] for j in range(taps))


def _depthwise_time_conv_fwd(padded, kernel, bias):
  return depthwise_time_conv(padded, kernel, bias), (padded, kernel)


def _depthwise_time_conv_bwd(residuals, g):
  """The gradients autodiff gives, computed as two fused passes: autodiff transposes each
  tap's slice into its own zero-padded full-size array, which XLA materialised (seven per
  unit); here the input gradient is one correlation of the zero-padded ``g`` with the
  flipped kernel. Ad-hoc timing of one unit at paper size, 1 s: 146 -> 59 ms."""
  padded, kernel = residuals
  taps = kernel.shape[0]
  frames = g.shape[1]
  g_full = jnp.pad(g, ((0, 0), (taps - 1, taps - 1), (0, 0), (0, 0)))
  d_padded = _correlate(g_full, kernel[::-1])
  d_kernel = jnp.stack([sum_leading(padded[:, j:j + frames] * g) for j in range(taps)])
  return d_padded, d_kernel, sum_leading(g)


depthwise_time_conv.defvjp(_depthwise_time_conv_fwd, _depthwise_time_conv_bwd)


class TemporalUnit(nn.Module):
  """One TCN residual unit over time, shared by all bands (paper II-C).

  ``x + PW2(SiLU(PW1(RMSNorm(DW(x)))))`` on ``(streams, frames, bands, features)``; DW is a
  depthwise conv over frames with "same" zero padding (left-only padding when causal).
  :meth:`on_window` runs the unit on given context frames instead of zero padding (streaming).
  """

  cfg: ApolloConfig

  def setup(self):
    cfg = self.cfg
    f, kernel = cfg.feature_dim, cfg.tcn_kernel
    self.dw_kernel = self.param("dw_kernel", torch_uniform(kernel), (kernel, f))
    self.dw_bias = self.param("dw_bias", torch_uniform(kernel), (f,))
    self.norm = self.param("norm", nn.initializers.ones, (f,))
    self.pw1_kernel = self.param("pw1_kernel", torch_uniform(f), (f, 4 * f))
    self.pw1_bias = self.param("pw1_bias", torch_uniform(f), (4 * f,))
    self.pw2_kernel = self.param("pw2_kernel", torch_uniform(4 * f), (4 * f, f))
    self.pw2_bias = self.param("pw2_bias", torch_uniform(4 * f), (f,))

  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    left = time_conv_left_pad(self.cfg)
    padded = jnp.pad(x, [(0, 0), (left, self.cfg.tcn_kernel - 1 - left), (0, 0), (0, 0)])
    return self.on_window(padded, left)

  def on_window(self, padded: jnp.ndarray, left: int) -> jnp.ndarray:
    """The unit on frames with their context: (streams, frames + kernel - 1, ...) -> (streams, frames, ...).

    Output frame t convolves ``padded[t : t + kernel]`` and adds the residual ``padded[t + left]``.
    """
    dt = self.cfg.compute_dtype
    frames = padded.shape[1] - self.cfg.tcn_kernel + 1
    y = depthwise_time_conv(padded, self.dw_kernel, self.dw_bias)

    def pointwise(y):  # (..., features), position-wise.
      # Saved for the backward pass (see map_rows): then no matmul of the unit is recomputed.
      y = checkpoint_name(add_bias(dense(rms_norm(y, self.norm), self.pw1_kernel, dt), self.pw1_bias), "tcn_pw1")
      return add_bias(dense(jax.nn.silu(y), self.pw2_kernel, dt), self.pw2_bias)

    return padded[:, left:left + frames] + map_rows(pointwise, y, self.cfg.chunk_rows,
                                                    self.cfg.remat, save=("tcn_pw1",))


class BandSequenceBlock(nn.Module):
  """Band transformer then temporal convolutions: ``(streams, frames, bands, features)``."""

  cfg: ApolloConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = BandRoformer(self.cfg, name="band")(x)  # Rematerialised inside (map_rows).
    # With remat, a TCN unit keeps only its input for the backward pass.
    unit = nn.remat(TemporalUnit) if self.cfg.remat else TemporalUnit
    for u in range(self.cfg.tcn_units):
      x = unit(self.cfg, name=f"time_{u}")(x)
    self.sow("intermediates", "output", x)
    return x


class BandMerge(nn.Module):
  """Band reconstruction (paper II-D): features -> complex spectrum.

  Per band: RMSNorm, 1x1 conv (bias) to ``4 width``, GLU -> ``[real (width), imag (width)]``.
  ``(streams, frames, bands, features) -> (streams, bins, frames)`` complex64.
  """

  cfg: ApolloConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    cfg = self.cfg
    widths = cfg.band_widths
    bw, last = widths[0], widths[-1]
    n_eq = len(widths) - 1
    f = cfg.feature_dim
    dt = cfg.compute_dtype
    # A residual model starts as the identity: zero output layer.
    init = nn.initializers.zeros if cfg.residual else torch_uniform(f)
    eq_norm = self.param("eq_norm", nn.initializers.ones, (n_eq, f))
    eq_kernel = self.param("eq_kernel", init, (n_eq, f, 4 * bw))
    eq_bias = self.param("eq_bias", init, (n_eq, 4 * bw))
    last_norm = self.param("last_norm", nn.initializers.ones, (f,))
    last_kernel = self.param("last_kernel", init, (f, 4 * last))
    last_bias = self.param("last_bias", init, (4 * last,))

    eq = add_bias(einsum("ntkf,kfc->ntkc", rms_norm(x[:, :, :n_eq], eq_norm), eq_kernel, dt), eq_bias)
    eq = nn.glu(eq, axis=-1)  # (streams, frames, n_eq, 2 bw)
    tail = nn.glu(add_bias(dense(rms_norm(x[:, :, n_eq], last_norm), last_kernel, dt), last_bias), axis=-1)
    batch, frames = x.shape[:2]
    real = jnp.concatenate([eq[..., :bw].reshape(batch, frames, n_eq * bw), tail[..., :last]], -1)
    imag = jnp.concatenate([eq[..., bw:].reshape(batch, frames, n_eq * bw), tail[..., last:]], -1)
    return jnp.swapaxes(jax.lax.complex(real, imag), 1, 2)


class Apollo(nn.Module):
  """Apollo generator: degraded waveform -> restored waveform.

  ``Apollo(cfg).apply({"params": params}, x)`` with ``x`` float32
  ``(batch, channels, samples)`` returns the same shape. Channels are independent.
  """

  cfg: ApolloConfig = ApolloConfig()

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    cfg = self.cfg
    if x.ndim != 3:
      raise ValueError(f"expected (batch, channels, samples), got shape {x.shape}")
    batch, channels, samples = x.shape
    wav = x.reshape(batch * channels, samples).astype(jnp.float32)
    spec = spectral.stft(wav, cfg.n_fft, cfg.hop)  # (streams, bins, frames)
    self.sow("intermediates", "spectrum", spec)

    h = BandSplit(cfg, name="band_split")(spec)
    self.sow("intermediates", "band_features", h)
    for layer in range(cfg.num_layers):
      h = BandSequenceBlock(cfg, name=f"block_{layer}")(h)

    est = BandMerge(cfg, name="band_merge")(h)
    if cfg.residual:
      est = est + spec
    self.sow("intermediates", "est_spectrum", est)
    out = spectral.istft(est, cfg.n_fft, samples, cfg.hop)
    return out.reshape(batch, channels, samples)


def jit_forward(cfg: ApolloConfig):
  """The generator as one jitted function ``(params, x) -> restored``, ``x`` float32
  ``(batch, channels, samples)`` -> same shape (the one forward of inference, validation
  and the benchmarks)."""
  return jax.jit(lambda params, x: Apollo(cfg).apply({"params": params}, x))


def init_params(cfg: ApolloConfig, rng: jax.Array) -> dict:
  """Random parameters (PyTorch-style init), traced on a short dummy input."""
  x = jnp.zeros((1, 1, 2 * cfg.n_fft), jnp.float32)
  return jax.jit(lambda r: Apollo(cfg).init(r, x)["params"])(rng)


def count_params(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
