"""Multi-resolution STFT discriminator (paper II-E) with PyTorch-style spectral norm.

Seven sub-discriminators, one per STFT window (32 ... 2048 samples, hop = window / 2).
The input waveform ``(batch, channels, samples)`` (channels = 2) is first divided by its root energy per
example; each window's spectrum is laid out as an image ``(batch, bins, frames, 4)`` with
channels ``[ch0_re, ch0_im, ch1_re, ch1_im]`` and scored by seven 3x3 convolutions
(4 -> 8 -> ... -> 256 -> 1, strides 1,2,1,2,1,2,1, LeakyReLU(0.2) after all but the last).

Spectral normalisation follows ``torch.nn.utils.spectral_norm`` exactly:

* the parameter is the raw weight (``weight_orig`` in torch);
* ``u`` and ``v`` live in the ``spectral`` collection, not in ``params``;
* in training mode (``train=True``, ``mutable=["spectral"]``) each application runs one
  power iteration from the stored ``u`` and stores the new ``u, v``; in eval mode the stored
  vectors are used as they are;
* ``sigma = u . (W v)`` with ``W`` the weight as a ``(out, in * 3 * 3)`` matrix; gradients
  flow through ``W`` in sigma but never through the power iteration.

Layout is NHWC (H = bins, W = frames) for speed; feature maps come out as
``(batch, bins, frames, features)``. ``v`` is kept in torch's ``(in, kh, kw)`` order so that
published ``weight_v`` buffers load unchanged.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from apollo_jax.spectral import multi_stft
from apollo_jax.layers import add_bias, torch_uniform

WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
EPS = float(np.finfo(np.float32).eps)  # input power normalisation
SN_EPS = 1e-12  # torch.nn.utils.spectral_norm's normalize eps
STRIDES = (1, 2, 1, 2, 1, 2, 1)
NEGATIVE_SLOPE = 0.2
_HIGHEST = jax.lax.Precision.HIGHEST

Spectra = tuple[jnp.ndarray, ...]
Scores = tuple[jnp.ndarray, ...]
Features = tuple[tuple[jnp.ndarray, ...], ...]


def root_energy(x: jnp.ndarray) -> jnp.ndarray:
  """``sqrt(sum of x^2 over channels and samples + eps)`` per example: (batch,) from (batch, channels, samples)."""
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=(1, 2)) + EPS)


def _l2_normalize(x: jnp.ndarray) -> jnp.ndarray:
  """``x / max(|x|, 1e-12)`` like ``torch.nn.functional.normalize``."""
  return x / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(x))), SN_EPS)


def _random_unit(key: jax.Array, n: int) -> jnp.ndarray:
  return _l2_normalize(jax.random.normal(key, (n,), jnp.float32))


def _conv_forward(x: jnp.ndarray, kernel: jnp.ndarray, stride: int,
                  result_dtype: jnp.dtype | None = jnp.float32) -> jnp.ndarray:
  """``result_dtype=None``: the inputs' dtype, for the functions whose VJP gives a weight
  gradient (their cotangent is ``dy`` in the inputs' dtype: bfloat16 products, like torch
  autocast's)."""
  return jax.lax.conv_general_dilated(
      x, kernel, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
      preferred_element_type=result_dtype)


# Convolutions with at most this many input channels run as multiply-adds on CPU (see _conv).
FEW_CHANNELS = 4


def _few_channel_conv(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
  """``_conv_forward`` as 9 x ``in`` multiply-adds of shifted maps, one example at a time.

  ``(batch, bins, frames, in) -> (batch, ceil(bins / stride), ceil(frames / stride), out)``,
  float32. For few input channels XLA:CPU's convolution spends its time gathering 3x3
  patches pixel by pixel (4-5 GFLOP/s for 4 -> 4 channels); the multiply-adds are one fused
  loop, ~4x faster. The loop over examples (``lax.map``) keeps them one fusion of their own:
  without it XLA fuses the multiply-adds into their producers and consumers (the spectrum's
  transposes), where they ran several times slower than the convolution.
  """
  _, height, width, channels = x.shape
  rows, cols = -(-height // stride), -(-width // stride)
  x, kernel = x.astype(jnp.float32), kernel.astype(jnp.float32)

  def one(example):  # (bins, frames, in) -> (rows, cols, out)
    padded = jnp.pad(example, ((1, 1), (1, 1), (0, 0)))
    out = None
    for i in range(3):
      for j in range(3):
        tap = padded[i:i + stride * (rows - 1) + 1:stride, j:j + stride * (cols - 1) + 1:stride]
        for c in range(channels):
          term = tap[:, :, c:c + 1] * kernel[i, j, c]
          out = term if out is None else out + term
    return out

  return jax.lax.map(one, x)


def _one_output_kernel_grad(x: jnp.ndarray, dy: jnp.ndarray) -> jnp.ndarray:
  """Weight gradient of a stride-1 3x3 conv with one output feature: ``(3, 3, in, 1)``.

  Flattened, the padded input is ``(positions, in)`` and tap ``(i, j)`` of output position
  ``p`` reads position ``p + i * (frames + 2) + j`` (never across examples: the padding
  keeps every tap inside). So the nine taps' gradients are one matmul
  ``(9, positions) @ (positions, in)`` of ``dy`` shifted by each tap's offset against the
  flattened input: the one-feature ``dy`` is shifted, not the wide input. XLA:CPU's own
  kernel gathers 3x3 patches for it and ran at 1-3 GFLOP/s (the demo's seven: 30 -> 4 ms).
  """
  channels = x.shape[-1]
  padded = jnp.pad(x.astype(jnp.float32), ((0, 0), (1, 1), (1, 1), (0, 0)))
  flat = padded.reshape(-1, channels)
  # dy at the padded map's top-left positions, zero at the others.
  grid = jnp.pad(dy[..., 0].astype(jnp.float32), ((0, 0), (0, 2), (0, 2))).reshape(-1)
  offsets = [i * (x.shape[2] + 2) + j for i in range(3) for j in range(3)]
  shifted = jnp.stack([jnp.pad(grid, (o, 0))[:grid.shape[0]] for o in offsets])  # (9, positions)
  grad = jnp.dot(shifted, flat, precision=_HIGHEST, preferred_element_type=jnp.float32)
  return grad.reshape(3, 3, channels, 1)


def _conv(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
  """``_conv_forward``, or on CPU for at most ``FEW_CHANNELS`` inputs :func:`_few_channel_conv`
  (demo step 5-10 % faster; docs/training_cost.md)."""
  if x.shape[-1] <= FEW_CHANNELS and jax.default_backend() == "cpu":
    return _few_channel_conv(x, kernel, stride)
  return _conv_forward(x, kernel, stride)


def _kernel_grad(x: jnp.ndarray, dy: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """Weight gradient of a stride-1 conv: XLA's (measured as fast as a matmul per tap, with a
  third of the memory), or on CPU for one output :func:`_one_output_kernel_grad`."""
  if kernel.shape[-1] == 1 and jax.default_backend() == "cpu":
    return _one_output_kernel_grad(x, dy).astype(kernel.dtype)
  return jax.vjp(lambda k: _conv_forward(x, k, 1, None), kernel)[1](dy)[0]


def _strided_input_grad(dy: jnp.ndarray, kernel: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
  """Input gradient of a stride-2 3x3 conv (padding 1) as four stride-1 convolutions.

  Input row ``u`` is seen by output row ``r`` through kernel row ``i = u + 1 - 2r``: an even
  ``u = 2m`` only through row 1 (``r = m``), an odd ``u = 2m + 1`` through rows 2 (``r = m``)
  and 0 (``r = m + 1``); the same holds for columns. Each of the four (row, column) parities
  is a small forward convolution of ``dy``; interleaving them gives ``(batch, bins, frames, in)``.
  """
  batch, h, w, _ = dy.shape
  flipped = jnp.swapaxes(kernel, 2, 3)  # (3, 3, out, in)
  taps = ((1,), (2, 0))  # kernel rows (or columns) seen by an even / odd input index
  phases = []
  for rows in taps:
    for cols in taps:
      sub = flipped[jnp.array(rows)][:, jnp.array(cols)]
      padded = jnp.pad(dy, ((0, 0), (0, len(rows) - 1), (0, len(cols) - 1), (0, 0)))
      phases.append(jax.lax.conv_general_dilated(
          padded, sub, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
          preferred_element_type=jnp.float32))
  grid = jnp.stack(phases, axis=0).reshape(2, 2, batch, h, w, -1)
  d_x = jnp.transpose(grid, (2, 3, 0, 4, 1, 5)).reshape(batch, 2 * h, 2 * w, -1)
  return d_x[:, :height, :width]


def _strided_kernel_grad(x: jnp.ndarray, dy: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """Weight gradient of a stride-2 3x3 conv (padding 1) as four stride-1 weight gradients.

  Output row ``r`` reads padded input row ``2r + i`` through kernel row ``i``: rows 0 and 2
  read the even padded rows (``2 (r + i // 2)``), row 1 the odd ones; the same for columns.
  Each (row, column) parity of the padded input is then an unstrided VALID correlation with
  a 2x2, 2x1, 1x2 or 1x1 kernel. XLA:CPU's own strided weight gradient (a convolution with
  a dilated ``dy``) took about twice as long. ``(3, 3, in, out)`` like ``kernel``, from
  ``x (batch, bins, frames, in)`` and ``dy (batch, ceil(bins / 2), ceil(frames / 2), out)``.
  """
  _, rows, cols, _ = dy.shape
  padded = jnp.pad(x, ((0, 0), (1, 2 * rows + 1 - x.shape[1]), (1, 2 * cols + 1 - x.shape[2]), (0, 0)))
  taps = ((0, 2), (1,))  # kernel rows (or columns) that read the even / odd padded rows
  grad = [[None] * 3 for _ in range(3)]
  for parity_r, kr in enumerate(taps):
    for parity_c, kc in enumerate(taps):
      phase = padded[:, parity_r:parity_r + 2 * (rows + len(kr) - 1):2,
                     parity_c:parity_c + 2 * (cols + len(kc) - 1):2]
      sub = jnp.zeros((len(kr), len(kc), *kernel.shape[2:]), kernel.dtype)
      valid = lambda k: jax.lax.conv_general_dilated(  # in dy's dtype, as in _kernel_grad
          phase, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
      g = jax.vjp(valid, sub)[1](dy)[0]
      for a, i in enumerate(kr):
        for b, j in enumerate(kc):
          grad[i][j] = g[a, b]
  return jnp.stack([jnp.stack(row) for row in grad])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
  """3x3 convolution, padding 1, NHWC / HWIO, float32 result: ``(batch, ceil(bins / s), ceil(frames / s), out)``.

  Same values as ``lax.conv_general_dilated`` and its gradients, up to float32 rounding; only
  how they are computed differs. XLA:CPU writes a strided convolution's input gradient as a
  convolution of a zero-dilated ``dy`` (three quarters of its products are with zeros); here
  it is four small forward convolutions, one per (row, column) parity, and a stride-1 input
  gradient is a forward convolution with the flipped kernel. A strided weight gradient is
  four unstrided ones (:func:`_strided_kernel_grad`); on CPU few-channel forward
  convolutions are multiply-adds (:func:`_conv`) and a one-output weight gradient is a
  matmul (:func:`_kernel_grad`).
  """
  return _conv(x, kernel, stride)


def _conv3x3_fwd(x, kernel, stride):
  return _conv(x, kernel, stride), (x, kernel)


def _conv3x3_bwd(stride, residuals, dy):
  x, kernel = residuals
  height, width = x.shape[1:3]
  dy = dy.astype(x.dtype)
  if stride == 1:
    d_kernel = _kernel_grad(x, dy, kernel)
    flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)  # (3, 3, out, in)
    d_x = _conv(dy, flipped, 1)
  else:
    d_kernel = _strided_kernel_grad(x, dy, kernel)
    d_x = _strided_input_grad(dy, kernel, height, width)
  return d_x.astype(x.dtype), d_kernel.astype(kernel.dtype)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


class Conv(nn.Module):
  """3x3 conv (padding 1) on NHWC, optionally spectrally normalised (torch semantics).

  ``(batch, bins, frames, in) -> (batch, ceil(bins / stride), ceil(frames / stride), features)``.
  With ``groups > 1`` in training mode, row ``r`` of the batch belongs to sub-batch
  ``r % groups`` and sub-batch ``g`` is normalised with the estimate after ``g + 1`` power
  iterations: the same as applying the conv to each sub-batch in turn.
  """

  features: int
  stride: int
  spectral_norm: bool = True
  compute_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False, groups: int = 1) -> jnp.ndarray:
    cin = x.shape[-1]
    fan_in = cin * 9
    kernel = self.param("kernel", torch_uniform(fan_in), (3, 3, cin, self.features))
    bias = self.param("bias", torch_uniform(fan_in), (self.features,))
    dt = self.compute_dtype
    y = conv3x3(x.astype(dt), kernel.astype(dt), self.stride)
    if self.spectral_norm:
      # conv(x, W / sigma) = conv(x, W) / sigma: one conv serves every sub-batch.
      inv_sigma = 1.0 / self._sigmas(kernel, train, groups)  # (groups,)
      y = y * jnp.tile(inv_sigma, x.shape[0] // inv_sigma.shape[0])[:, None, None, None]
    return add_bias(y, bias)

  def _sigmas(self, kernel: jnp.ndarray, train: bool, groups: int) -> jnp.ndarray:
    """Largest singular value estimates ``u . (W v)``: ``(groups,)`` when training (one
    power iteration each, ``u, v`` stored after the last), ``(1,)`` from the stored
    ``u, v`` in eval mode."""
    out = self.features
    mat = jnp.transpose(kernel, (3, 2, 0, 1)).reshape(out, -1)  # torch (out, in*kh*kw)
    u = self.variable("spectral", "u", lambda: _random_unit(self.make_rng("params"), out))
    v = self.variable("spectral", "v", lambda: _random_unit(self.make_rng("params"), mat.shape[1]))
    u_vec, v_vec = u.value, v.value
    if not train or self.is_initializing():
      return _sigma(mat, u_vec, v_vec)[None]
    w = jax.lax.stop_gradient(mat)
    sigmas = []
    for _ in range(groups):
      v_vec = _l2_normalize(jnp.dot(u_vec, w, precision=_HIGHEST))
      u_vec = _l2_normalize(jnp.dot(w, v_vec, precision=_HIGHEST))
      sigmas.append(_sigma(mat, u_vec, v_vec))
    u.value, v.value = u_vec, v_vec
    return jnp.stack(sigmas)


def _sigma(mat: jnp.ndarray, u: jnp.ndarray, v: jnp.ndarray) -> jnp.ndarray:
  """``u . (W v)``, differentiable in ``W`` only."""
  u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
  return jnp.dot(u, jnp.dot(mat, v, precision=_HIGHEST), precision=_HIGHEST)


class SubDiscriminator(nn.Module):
  """Seven convs on one window's spectrum image ``(batch, bins, frames, 2 * channels)``.

  Returns ``(score (batch, bins', frames', 1), six hidden maps after their LeakyReLU)``.
  """

  hidden: int = 8
  compute_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False, groups: int = 1):
    feats = []
    n = len(STRIDES)
    for j, stride in enumerate(STRIDES):
      last = j == n - 1
      width = 1 if last else self.hidden * 2 ** j
      x = Conv(width, stride, spectral_norm=not last, compute_dtype=self.compute_dtype,
               name=f"conv_{j}")(x, train, groups)
      if not last:
        x = nn.leaky_relu(x, NEGATIVE_SLOPE)
        feats.append(x)
    return x, tuple(feats)


class Discriminator(nn.Module):
  """The published ``MultiFrequencyDiscriminator``.

  ``Discriminator().apply({"params": p, "spectral": s}, x)`` scores ``x`` (batch, channels,
  samples) in eval mode; ``apply(..., x, train=True, mutable=["spectral"])`` also runs one
  power iteration per spectrally normalised conv and returns the new ``spectral`` state.

  ``spectra`` may pass precomputed :func:`apollo_jax.spectral.multi_stft` of the *raw* ``x`` (e.g. shared with
  the reconstruction loss); the power normalisation is then applied to them (STFT is
  linear). Returns ``(scores, features)``: per window the final map
  ``(batch, bins', frames', 1)`` and a tuple of six hidden maps ``(batch, bins_j, frames_j, features_j)``.

  ``groups``: ``x`` holds that many sub-batches interleaved along the batch (row ``r`` in
  sub-batch ``r % groups``, see :func:`interleave`). In training mode the result equals
  applying D to each sub-batch in turn (``groups`` power iterations) in one pass.
  """

  windows: tuple[int, ...] = WINDOWS
  channels: int = 2
  hidden: int = 8
  compute_dtype: str = "float32"

  def setup(self):
    self.disc = [SubDiscriminator(self.hidden, self.compute_dtype) for _ in self.windows]

  def __call__(self, x: jnp.ndarray, train: bool = False, spectra: Spectra | None = None,
               groups: int = 1) -> tuple[Scores, Features]:
    if x.ndim != 3 or x.shape[1] != self.channels:
      raise ValueError(f"expected (batch, {self.channels}, samples), got shape {x.shape}")
    if x.shape[0] % groups:
      raise ValueError(f"batch {x.shape[0]} is not divisible into {groups} interleaved groups")
    if spectra is None:
      spectra = multi_stft(x, self.windows)
    if len(spectra) != len(self.windows):
      raise ValueError(f"got {len(spectra)} spectra for {len(self.windows)} windows")
    scale = (1.0 / root_energy(x.astype(jnp.float32)))[:, None, None, None]
    scores, features = [], []
    for sub, spec in zip(self.disc, spectra):
      spec = spec * scale  # (batch, channels, bins, frames)
      img = jnp.stack([jnp.real(spec), jnp.imag(spec)], axis=-1)  # (batch, channels, bins, frames, 2)
      img = jnp.transpose(img, (0, 2, 3, 1, 4)).reshape(*img.shape[:1], *img.shape[2:4], -1)
      score, feats = sub(img, train, groups)
      scores.append(score)
      features.append(feats)
    return tuple(scores), tuple(features)


def interleave(*xs: jnp.ndarray) -> jnp.ndarray:
  """``(a_0, b_0, ..., a_1, b_1, ...)`` along the batch; keeps batch shards local."""
  return jnp.stack(xs, axis=1).reshape(-1, *xs[0].shape[1:])


def deinterleave(tree, groups: int) -> tuple:
  """Inverse of :func:`interleave` on every leaf of ``tree``: one tree per group."""
  split = jax.tree.map(lambda a: a.reshape(-1, groups, *a.shape[1:]), tree)
  return tuple(jax.tree.map(lambda a, g=g: a[:, g], split) for g in range(groups))


def init_discriminator(rng: jax.Array, windows: Sequence[int] = WINDOWS, channels: int = 2,
                       hidden: int = 8) -> dict:
  """Random ``{"params", "spectral"}`` as torch initialises them (numpy arrays).

  Conv kernels and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); ``u``, ``v`` random unit
  vectors. Drawn on the host from a numpy generator seeded by ``rng``: jax's PRNG would
  compile one kernel per tensor shape, which takes far longer than the draw.
  """
  disc = Discriminator(tuple(windows), channels, hidden)
  x = jax.ShapeDtypeStruct((1, channels, max(windows)), jnp.float32)
  shapes = flax.traverse_util.flatten_dict(jax.eval_shape(disc.init, jax.random.PRNGKey(0), x))
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  gen = np.random.default_rng(np.asarray(rng).ravel().tolist())
  out = {}
  for path, shape in sorted(shapes.items()):
    if path[0] == "params":
      kernel = shapes[(*path[:-1], "kernel")].shape
      bound = 1.0 / np.sqrt(np.prod(kernel[:-1]))  # fan_in = kh * kw * in
      value = gen.uniform(-bound, bound, shape.shape)
    else:
      value = gen.standard_normal(shape.shape)
      value /= max(np.linalg.norm(value), SN_EPS)
    out[path] = value.astype(np.float32)
  return flax.traverse_util.unflatten_dict(out)
