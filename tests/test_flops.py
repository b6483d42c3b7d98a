"""The matmul FLOP count of bench/train_step.py: loops by trip count, dead code not counted."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from apollo_jax.gan.discriminator import conv3x3
from apollo_jax.training import TrainConfig, create_train_state, make_mesh, make_train_step
from apollo_jax.training.flops import bf16_peak_tflops, matmul_flops
from tests.conftest import TINY, TINY_WINDOWS

CHUNKS, ROWS, IN, OUT = 10, 64, 32, 16
MATMUL = 2 * ROWS * IN * OUT


def test_a_map_counts_its_body_once_per_chunk_where_xla_counts_it_once():
  x, w = jnp.ones((CHUNKS, ROWS, IN)), jnp.ones((IN, OUT))
  fn = jax.jit(lambda x, w: jax.lax.map(lambda rows: rows @ w, x))
  assert matmul_flops(jax.make_jaxpr(fn)(x, w)) == (CHUNKS * MATMUL, 0)
  cost = fn.lower(x, w).compile().cost_analysis()
  assert cost["flops"] < CHUNKS * MATMUL / 2  # why XLA's own count is not used for the step


def test_a_rematerialised_gradient_counts_forward_and_both_gradients():
  x, w = jnp.ones((CHUNKS, ROWS, IN)), jnp.ones((IN, OUT))
  chunk = jax.checkpoint(lambda rows, w: jnp.tanh(rows @ w))
  loss = lambda x, w: jnp.sum(jax.lax.map(lambda rows: chunk(rows, w), x))
  flops, loops = matmul_flops(jax.make_jaxpr(jax.value_and_grad(loss, argnums=(0, 1)))(x, w))
  # Forward, its recomputation in the backward pass, and the input and weight gradients.
  assert (flops, loops) == (4 * CHUNKS * MATMUL, 0)


@pytest.mark.parametrize("stride", [1, 2])
def test_discriminator_conv_and_its_hand_written_gradients(stride):
  x, k = jnp.ones((2, 16, 12, 8)), jnp.ones((3, 3, 8, 16))
  forward = 2 * 2 * (16 // stride) * (12 // stride) * 16 * 9 * 8
  assert matmul_flops(jax.make_jaxpr(lambda x, k: conv3x3(x, k, stride))(x, k)) == (forward, 0)
  grads = jax.value_and_grad(lambda x, k: jnp.sum(conv3x3(x, k, stride) ** 2), argnums=(0, 1))
  # The backward's own forward calls (jax.vjp in the weight gradient) are dead code.
  assert matmul_flops(jax.make_jaxpr(grads)(x, k)) == (3 * forward, 0)


def test_a_while_loop_is_reported_as_counted_once():
  fn = jax.jit(lambda x, n: jax.lax.fori_loop(0, n, lambda i, c: c @ jnp.ones((IN, IN)), x))
  assert matmul_flops(jax.make_jaxpr(fn)(jnp.ones((ROWS, IN)), 3)) == (2 * ROWS * IN * IN, 1)


def test_device_peaks():
  assert bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
  assert bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
  assert bf16_peak_tflops("NVIDIA H200") == 989.0
  assert bf16_peak_tflops("TPU v5 lite") == 197.0
  assert bf16_peak_tflops("cpu") is None


@pytest.mark.slow  # initialising the state compiles
def test_the_chunked_train_step_counts_every_chunk():
  cfg = TrainConfig(windows=TINY_WINDOWS, spectral_norm_updates_per_step=1)
  mesh = make_mesh(jax.devices()[:1])
  audio = jax.ShapeDtypeStruct((1, 2, 4096), jnp.float32)
  batch = {"target": audio, "degraded": audio}
  state = create_train_state(TINY, cfg, jax.random.PRNGKey(0), mesh=mesh)
  counts = []
  for chunk_rows in (8, 0):  # traced, not compiled; the chunking does not change the state
    gen_cfg = dataclasses.replace(TINY, chunk_rows=chunk_rows)
    counts.append(matmul_flops(make_train_step(gen_cfg, cfg, mesh).trace(state, batch).jaxpr))
  (chunked, loops), (whole, _) = counts
  # Chunks recompute part of their forward and pad the last chunk: a little more, never less.
  assert loops == 0 and whole <= chunked < 1.1 * whole
