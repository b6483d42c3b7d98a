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

**ONNX** (``export_onnx``, optional extra ``requirements-onnx.txt``): see that function.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from apollo_jax.audio import current_umask
from apollo_jax.config import ApolloConfig
from apollo_jax.model import Apollo

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
