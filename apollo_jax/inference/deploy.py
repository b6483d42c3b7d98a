"""Deployable exports of the generator: StableHLO (``jax.export``) and ONNX.

**StableHLO** (``export_stablehlo``): the jitted forward ``(params, audio) -> audio`` for one
fixed ``(batch, channels, samples)``, serialised with :func:`jax.export.export` into one
``.npz`` file: ``exported`` (the serialised module, uint8) and ``param_<i>`` (the weights in
the module's argument order). Weights are arguments, not constants, because XLA folds
constants differently from the live model (2e-8 apart); as arguments the reloaded module
equals the live model bit for bit. Running it needs only jax and numpy
(``scripts/run_stablehlo.py``)::

  z = np.load("apollo.hlo.npz")
  exported = jax.export.deserialize(bytearray(z["exported"]))
  params = tuple(z[f"param_{i}"] for i in range(int(z["num_params"])))
  y = exported.call(params, x)            # x: float32 (batch, channels, samples)

**ONNX** (``export_onnx``, optional extra ``requirements-onnx.txt``): jax2onnx cannot
convert the STFT (its inverse real FFT needs complex inputs ONNX does not have), so the ONNX
model is the spectral core, spectrum -> spectrum: inputs ``real`` and ``imag``, outputs
``est_real`` and ``est_imag``, each float32 ``(batch x channels, bins, frames)``, band split,
all blocks and band merge on real/imaginary parts. ``scripts/run_onnx.py`` does the STFT and
inverse STFT around it in numpy (published conventions) and needs only numpy and
onnxruntime.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from apollo_jax.audio import current_umask
from apollo_jax.config import ApolloConfig
from apollo_jax import layers
from apollo_jax import model as M
from apollo_jax.model import Apollo

ONNX_EXTRA = "pip install -r requirements-onnx.txt"

STABLEHLO_SUFFIX = ".npz"


def _forward(cfg: ApolloConfig, treedef):
  """``(tuple of weight leaves, audio (batch, channels, samples)) -> audio``, pure."""
  def f(leaves, x):
    params = jax.tree_util.tree_unflatten(treedef, list(leaves))
    return Apollo(cfg).apply({"params": params}, x)
  return f


def _atomic_write(path: str, write) -> None:
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1],
                             dir=os.path.dirname(os.path.abspath(path)))
  os.close(fd)
  try:
    write(tmp)
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def check_shape(shape: tuple[int, int, int], cfg: ApolloConfig) -> tuple[int, int, int]:
  """``(batch, channels, samples)`` as ints; ValueError unless positive and >= one window."""
  b, c, s = (int(v) for v in shape)
  if min(b, c, s) < 1:
    raise ValueError(f"batch, channels and samples must be positive, got {(b, c, s)}")
  if s < cfg.n_fft:
    raise ValueError(f"--samples {s} is shorter than one STFT window ({cfg.n_fft} samples)")
  return b, c, s


def export_stablehlo(cfg: ApolloConfig, params: Mapping, shape: tuple[int, int, int],
                     path: str, platforms: tuple[str, ...] | None = None) -> None:
  """Serialises the jitted generator for input ``shape`` = (batch, channels, samples).

  Writes ``path`` (``.npz``, module docstring) atomically. ``platforms`` (e.g.
  ``("cpu", "cuda")``) defaults to JAX's default backend.
  """
  if not path.endswith(STABLEHLO_SUFFIX):
    raise ValueError(f"{path}: the StableHLO export is written as a {STABLEHLO_SUFFIX} file")
  shape = check_shape(shape, cfg)
  leaves, treedef = jax.tree_util.tree_flatten(jax.tree.map(jnp.asarray, params))
  specs = (tuple(jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in leaves),
           jax.ShapeDtypeStruct(shape, jnp.float32))
  exported = jax.export.export(jax.jit(_forward(cfg, treedef)), platforms=platforms)(*specs)
  blob = np.frombuffer(bytes(exported.serialize()), np.uint8)
  arrays: dict[str, Any] = {"exported": blob, "num_params": np.int64(len(leaves)),
                            "shape": np.asarray(shape, np.int64),
                            "sample_rate": np.int64(cfg.sample_rate)}
  arrays |= {f"param_{i}": np.asarray(a, np.float32) for i, a in enumerate(leaves)}
  def write(tmp: str) -> None:
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
  _atomic_write(path, write)


def live_forward(cfg: ApolloConfig, params: Mapping):
  """The live model the exports are checked against: ``jit((leaves, x) -> audio)`` + leaves."""
  leaves, treedef = jax.tree_util.tree_flatten(jax.tree.map(jnp.asarray, params))
  return jax.jit(_forward(cfg, treedef)), tuple(leaves)


def _band_split(p: Mapping, cfg: ApolloConfig, re: jnp.ndarray, im: jnp.ndarray) -> jnp.ndarray:
  """``model.BandSplit`` on real and imaginary parts: 2 x (batch, bins, frames) ->
  (batch, frames, bands, features)."""
  widths = cfg.band_widths
  bw, n_eq, dt = widths[0], len(widths) - 1, cfg.compute_dtype
  xr, xi = jnp.swapaxes(re, 1, 2), jnp.swapaxes(im, 1, 2)  # (batch, frames, bins)

  def features(r, i):
    power = jnp.sqrt(jnp.sum(r ** 2 + i ** 2, axis=-1, keepdims=True) + M.EPS)
    return jnp.concatenate([r / power, i / power, jnp.log(power)], axis=-1)

  lead = xr.shape[:2]
  eq = features(xr[..., :n_eq * bw].reshape(*lead, n_eq, bw), xi[..., :n_eq * bw].reshape(*lead, n_eq, bw))
  last = features(xr[..., n_eq * bw:], xi[..., n_eq * bw:])
  eq_out = layers.einsum("ntkc,kcf->ntkf", layers.rms_norm(eq, p["eq_norm"]), p["eq_kernel"], dt) + p["eq_bias"]
  last_out = layers.dense(layers.rms_norm(last, p["last_norm"]), p["last_kernel"], dt) + p["last_bias"]
  return jnp.concatenate([eq_out, last_out[:, :, None, :]], axis=2)


def _band_merge(p: Mapping, cfg: ApolloConfig, x: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """``model.BandMerge`` returning real and imaginary parts, each (batch, bins, frames)."""
  widths = cfg.band_widths
  bw, last, n_eq, dt = widths[0], widths[-1], len(widths) - 1, cfg.compute_dtype
  eq = layers.einsum("ntkf,kfc->ntkc", layers.rms_norm(x[:, :, :n_eq], p["eq_norm"]), p["eq_kernel"], dt)
  eq = jax.nn.glu(eq + p["eq_bias"], axis=-1)  # (batch, frames, n_eq, 2 bw)
  tail = jax.nn.glu(layers.dense(layers.rms_norm(x[:, :, n_eq], p["last_norm"]), p["last_kernel"], dt)
                    + p["last_bias"], axis=-1)
  batch, frames = x.shape[:2]
  real = jnp.concatenate([eq[..., :bw].reshape(batch, frames, n_eq * bw), tail[..., :last]], -1)
  imag = jnp.concatenate([eq[..., bw:].reshape(batch, frames, n_eq * bw), tail[..., last:]], -1)
  return jnp.swapaxes(real, 1, 2), jnp.swapaxes(imag, 1, 2)


def spectral_core(cfg: ApolloConfig, params: Mapping):
  """``(real, imag) -> (est_real, est_imag)``, each (batch, bins, frames): the generator
  between its STFT and inverse STFT, without complex numbers (what the ONNX file holds)."""
  cfg = dataclasses.replace(cfg, chunk_rows=0, remat=False)  # plain ops, no loops
  p = jax.tree.map(jnp.asarray, params)

  def core(re, im):
    h = _band_split(p["band_split"], cfg, re, im)
    for layer in range(cfg.num_layers):
      h = M.BandSequenceBlock(cfg).apply({"params": p[f"block_{layer}"]}, h)
    est_re, est_im = _band_merge(p["band_merge"], cfg, h)
    if cfg.residual:
      est_re, est_im = est_re + re, est_im + im
    return est_re, est_im
  return core


def export_onnx(cfg: ApolloConfig, params: Mapping, shape: tuple[int, int, int], path: str) -> None:
  """Writes the spectral core (module docstring) for audio ``shape`` = (batch, channels,
  samples) as an ONNX model; ``n_fft``, ``hop``, ``sample_rate`` and ``shape`` are in its
  metadata. Needs the optional extra (``requirements-onnx.txt``): ValueError naming the
  install command when it is missing.
  """
  try:
    import onnx
    from jax2onnx import to_onnx
  except ImportError as e:
    raise ValueError(f"export --format onnx needs the optional extra ({e.name} is missing): "
                     f"{ONNX_EXTRA}") from None
  if not path.endswith(".onnx"):
    raise ValueError(f"{path}: the ONNX export is written as a .onnx file")
  b, c, s = check_shape(shape, cfg)
  spec = jax.ShapeDtypeStruct((b * c, cfg.num_bins, 1 + s // cfg.hop), jnp.float32)
  model = to_onnx(spectral_core(cfg, params), [spec, spec], model_name="apollo_spectral_core",
                  input_names=["real", "imag"], output_names=["est_real", "est_imag"])
  onnx.helper.set_model_props(model, {
      "n_fft": str(cfg.n_fft), "hop": str(cfg.hop), "sample_rate": str(cfg.sample_rate),
      "shape": f"{b},{c},{s}"})
  _atomic_write(path, lambda tmp: onnx.save_model(model, tmp))
