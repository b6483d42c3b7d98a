"""Layers shared by the generator and the discriminator.

PyTorch-style initialisation, RMS norm, bias addition and scaling whose parameter gradients
are sums over the leading axes (:func:`sum_leading`), matmuls in the compute dtype with
float32 results, interleaved rotary position tables, and :func:`map_rows` (position-wise
layers applied in row chunks).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

NORM_EPS = 1e-5


def torch_uniform(fan_in: int):
  """PyTorch's default conv init for weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def sum_leading(x: jnp.ndarray, kept: int = 1) -> jnp.ndarray:
  """Sum over all but the last ``kept`` axes: ``(..., *tail) -> tail`` (a parameter's gradient).

  On CPU a matmul with a vector of ones: XLA:CPU splits such sums into windowed partial sums
  (``reduce-window``) that ran ~4x slower (0.56 against 0.13 ms for ``(32, 80, 128)``).
  Elsewhere ``jnp.sum``.
  """
  lead = x.ndim - kept
  if jax.default_backend() != "cpu":
    return jnp.sum(x, axis=tuple(range(lead)))
  flat = x.reshape(-1, math.prod(x.shape[lead:]))
  ones = jnp.ones((flat.shape[0],), flat.dtype)
  return jnp.dot(ones, flat, precision=jax.lax.Precision.HIGHEST).reshape(x.shape[lead:])


@jax.custom_vjp
def add_bias(x: jnp.ndarray, bias: jnp.ndarray) -> jnp.ndarray:
  """``x + bias``, ``bias`` broadcast over the leading axes; its gradient by :func:`sum_leading`."""
  return x + bias


def _add_bias_fwd(x, bias):
  return x + bias, (jnp.zeros((), x.dtype), bias)


def _add_bias_bwd(residuals, dy):
  like_x, bias = residuals
  return dy.astype(like_x.dtype), sum_leading(dy, bias.ndim).astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


@jax.custom_vjp
def scale(x: jnp.ndarray, weight: jnp.ndarray) -> jnp.ndarray:
  """``x * weight``, ``weight`` broadcast over the leading axes; its gradient by :func:`sum_leading`."""
  return x * weight


def _scale_fwd(x, weight):
  return x * weight, (x, weight)


def _scale_bwd(residuals, dy):
  x, weight = residuals
  return (dy * weight).astype(x.dtype), sum_leading(x * dy, weight.ndim).astype(weight.dtype)


scale.defvjp(_scale_fwd, _scale_bwd)


def rms_norm(x: jnp.ndarray, weight: jnp.ndarray) -> jnp.ndarray:
  """RMS norm over the last axis in float32: ``x * rsqrt(mean(x^2) + 1e-5) * weight``."""
  x = x.astype(jnp.float32)
  return scale(x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + NORM_EPS), weight)


def einsum(spec: str, a: jnp.ndarray, b: jnp.ndarray, dtype: str) -> jnp.ndarray:
  """``jnp.einsum`` with both inputs in the compute dtype and a float32 result."""
  return jnp.einsum(spec, a.astype(dtype), b.astype(dtype), preferred_element_type=dtype).astype(jnp.float32)


def dense(x: jnp.ndarray, kernel: jnp.ndarray, dtype: str) -> jnp.ndarray:
  """1x1 convolution over the last axis: ``x @ kernel`` (see :func:`einsum`).

  Flattened to one 2-D matmul: XLA:CPU runs a rank-4 dot about 1.5x slower.
  """
  flat = einsum("ti,io->to", x.reshape(-1, x.shape[-1]), kernel, dtype)
  return flat.reshape(*x.shape[:-1], kernel.shape[-1])


def rotary_tables(positions: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
  """Interleaved rotary tables, (positions, dim) cos and sin, pair (2j, 2j+1) at theta_j.

  Computed in float32 like the published buffers, so they agree to float32 rounding.
  """
  theta = 1.0 / (np.float32(10000.0) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
  angles = np.arange(positions, dtype=np.float32)[:, None] * theta.astype(np.float32)[None, :]
  angles = np.repeat(angles, 2, axis=-1)
  return np.cos(angles), np.sin(angles)


def apply_rotary(x: jnp.ndarray, cos: np.ndarray, sin: np.ndarray) -> jnp.ndarray:
  """Rotates interleaved pairs: (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin).

  Args:
    x: (..., bands, heads, head_dim) (positions are bands here).
    cos, sin: (bands, head_dim).
  """
  pairs = x.reshape(*x.shape[:-1], -1, 2)
  rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
  return x * cos[:, None, :] + rotated * sin[:, None, :]


def map_rows(fn, x: jnp.ndarray, rows: int, remat: bool = False,
             save: tuple[str, ...] = ()) -> jnp.ndarray:
  """Applies a position-wise ``fn`` to ``x`` (streams, frames, ...) in chunks of about ``rows`` rows.

  ``fn`` maps (streams, frames, ...) -> (streams, frames, ...') independently per
  (stream, frame) row; running it on ``rows`` rows at a time with ``lax.map`` keeps the wide
  hidden activations (the MLPs are 4-8x wider than the features, the attention weights 80x80
  per head) in cache and bounds their memory. On a 2-core CPU this brings the position-wise
  layers close to the machine's matmul rate. A chunk is every stream over
  ``max(1, rows // streams)`` frames: the streams stay a whole axis of the loop body, so when
  the batch is sharded over devices each device loops over its own streams (chunks of the
  flattened ``streams * frames`` rows made XLA's partitioner replicate the loop: every device
  computed the whole generator). ``rows=0`` applies ``fn`` at once; ``rows<0`` picks 8 on CPU
  and 0 elsewhere.

  Under differentiation a chunked ``fn`` is rematerialised chunk by chunk: it saves its
  input and the values it tagged with ``jax.ad_checkpoint.checkpoint_name`` under a name in
  ``save``; the backward pass recomputes the rest of the chunk where it needs it, in cache.
  What to save is measured, not assumed: a TCN unit keeps its first matmul's output (its
  gradient then recomputes no matmul); the band transformer keeps nothing, since keeping its
  matmuls' outputs made the step no faster and its memory bigger (docs/training_cost.md,
  ninth sitting). With ``remat`` nothing but the input is
  saved (``save`` is ignored), chunked or not: training memory then no longer grows with
  the MLP and attention widths.
  """
  if rows < 0:  # Auto: small chunks pay off on CPU caches; accelerators want big matmuls.
    rows = 8 if jax.default_backend() == "cpu" else 0
  streams, frames = x.shape[:2]
  step = max(1, rows // streams)  # frames per chunk
  chunked = rows > 0 and frames > step
  if remat:
    fn = jax.checkpoint(fn)
  elif chunked:
    fn = jax.checkpoint(fn, policy=jax.checkpoint_policies.save_only_these_names(*save))
  if not chunked:
    return fn(x)
  padded = jnp.pad(x, [(0, 0), (0, -frames % step)] + [(0, 0)] * (x.ndim - 2))
  chunks = jnp.moveaxis(padded.reshape(streams, -1, step, *x.shape[2:]), 1, 0)
  out = jnp.moveaxis(jax.lax.map(fn, chunks), 0, 1)
  return out.reshape(streams, -1, *out.shape[3:])[:, :frames]
