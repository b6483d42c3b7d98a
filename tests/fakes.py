"""Fast stand-ins for tests: generator params and test signals without compiling anything."""

import functools

import jax
import numpy as np

from apollo_jax import ApolloConfig, init_params


def random_params(cfg: ApolloConfig, seed: int = 0) -> dict:
  """Params with ``init_params``'s tree and shapes, drawn with numpy (no XLA compile).

  Norm weights are ones like the real init; kernels and biases are small uniform values.
  """
  shapes = _param_shapes(cfg)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if "norm" in name:
      return np.ones(leaf.shape, np.float32)
    fan_in = leaf.shape[-2] if len(leaf.shape) >= 2 else leaf.shape[-1]
    bound = 1 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.lru_cache(maxsize=None)
def _param_shapes(cfg: ApolloConfig):
  """``init_params``'s tree of ShapeDtypeStructs (tracing the init takes ~0.5 s; the torch
  zip fuzzer asks for the same few configs again and again)."""
  return jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))


def music(seconds: float, channels: int = 2, rate: int = 44100, seed: int = 0) -> np.ndarray:
  """Band-limited test music: decaying harmonic notes plus noise bursts, float32 (channels, n)."""
  rng = np.random.default_rng(seed)
  n = int(round(seconds * rate))
  t = np.arange(n) / rate
  out = np.zeros((channels, n))
  for onset in np.arange(0, seconds, 0.25):
    env = np.where(t >= onset, np.exp(-(t - onset) * 5), 0)
    f0 = rng.choice([110.0, 165.0, 220.0, 330.0])
    note = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    burst = rng.standard_normal(n) * np.where(t >= onset, np.exp(-(t - onset) * 40), 0)
    for c in range(channels):
      out[c] += env * note * rng.uniform(0.5, 1) + 0.3 * burst
  return (0.5 * out / np.abs(out).max()).astype(np.float32)
