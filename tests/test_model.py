import jax
import jax.numpy as jnp
import numpy as np
import pytest

from apollo_jax import Apollo, ApolloConfig, count_params, init_params
from tests.conftest import TINY



def test_paper_config_parameter_count():
  cfg = ApolloConfig()
  assert (cfg.n_fft, cfg.hop, cfg.num_bins) == (882, 441, 442)
  assert cfg.band_widths == (5,) * 79 + (47,)
  shapes = jax.eval_shape(lambda r: init_params(cfg, r), jax.random.PRNGKey(0))
  assert count_params(shapes) == 16_539_308


@pytest.mark.slow
def test_shape_preserved_and_channels_independent():
  params = init_params(TINY, jax.random.PRNGKey(0))
  x = np.random.default_rng(0).standard_normal((2, 3, 3000)).astype(np.float32) * 0.1
  fwd = jax.jit(lambda p, x: Apollo(TINY).apply({"params": p}, x))
  y = fwd(params, x)
  assert y.shape == x.shape and y.dtype == jnp.float32
  # Channel 1 restored alone equals channel 1 restored with the others.
  y1 = fwd(params, x[:, 1:2])
  np.testing.assert_allclose(np.asarray(y[:, 1:2]), np.asarray(y1), atol=1e-6)


@pytest.mark.slow
def test_grad_and_vmap():
  params = init_params(TINY, jax.random.PRNGKey(1))
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 1, 2000)), jnp.float32)
  loss = lambda p: jnp.mean(Apollo(TINY).apply({"params": p}, x) ** 2)
  grads = jax.jit(jax.grad(loss))(params)
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree_util.tree_leaves(grads)]
  assert all(np.isfinite(norms)) and sum(norms) > 0
  per_item = jax.vmap(lambda xi: Apollo(TINY).apply({"params": params}, xi[None])[0])(x)
  whole = Apollo(TINY).apply({"params": params}, x)
  np.testing.assert_allclose(np.asarray(per_item), np.asarray(whole), atol=1e-5)


@pytest.mark.slow
def test_remat_and_bf16_keep_params_and_outputs_close():
  params = init_params(TINY, jax.random.PRNGKey(2))
  x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 1, 2000)), jnp.float32) * 0.1
  ref = Apollo(TINY).apply({"params": params}, x)
  remat = ApolloConfig(**{**TINY.__dict__, "remat": True})
  np.testing.assert_allclose(np.asarray(Apollo(remat).apply({"params": params}, x)), np.asarray(ref), atol=1e-6)
  bf16 = ApolloConfig(**{**TINY.__dict__, "compute_dtype": "bfloat16"})
  out = Apollo(bf16).apply({"params": params}, x)
  assert float(jnp.max(jnp.abs(out - ref))) < 0.05 * float(jnp.max(jnp.abs(ref))) + 1e-3


def test_band_split_is_batched_not_per_band():
  # The 80 band projections must compile to a handful of dots, not one per band.
  # Lowering needs only the parameters' shapes (init_params itself compiles the whole init).
  params = jax.eval_shape(lambda: init_params(TINY, jax.random.PRNGKey(0)))
  hlo = jax.jit(lambda p, x: Apollo(TINY).apply({"params": p}, x)).lower(
      params, jnp.zeros((1, 1, 2000))).as_text()
  assert hlo.count("dot_general") < 40


def test_bad_input_rank_is_clear():
  from fakes import random_params
  params = random_params(TINY)  # the error comes before the weights are used: no init compile
  with pytest.raises(ValueError, match=r"\(batch, channels, samples\)"):
    Apollo(TINY).apply({"params": params}, jnp.zeros((2000,)))


def test_config_validation():
  with pytest.raises(ValueError, match="divisible"):
    ApolloConfig(feature_dim=30, num_heads=8)
  with pytest.raises(ValueError, match="too small"):
    ApolloConfig(win_ms=1)
  assert ApolloConfig.from_json(TINY.to_json()) == TINY


@pytest.mark.slow
def test_chunked_rows_give_the_same_output():
  params = init_params(TINY, jax.random.PRNGKey(3))
  x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 2, 4000)), jnp.float32) * 0.1
  ref = Apollo(TINY).apply({"params": params}, x)
  chunked = ApolloConfig(**{**TINY.__dict__, "chunk_rows": 7})  # 2*2*10 rows, not a multiple of 7
  out = jax.jit(lambda p, x: Apollo(chunked).apply({"params": p}, x))(params, x)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-6)


@pytest.mark.slow
def test_residual_variant_starts_as_identity():
  cfg = ApolloConfig(**{**TINY.__dict__, "residual": True})
  params = init_params(cfg, jax.random.PRNGKey(4))
  x = jnp.asarray(np.random.default_rng(4).standard_normal((1, 2, 3000)), jnp.float32) * 0.1
  np.testing.assert_allclose(np.asarray(Apollo(cfg).apply({"params": params}, x)), np.asarray(x), atol=1e-5)


@pytest.mark.slow
def test_row_chunks_bound_training_memory():
  """Under differentiation a row chunk saves its input and its two named wide activations
  (the band MLP's and the TCN's first matmul outputs), with ``remat`` only its input: XLA's
  memory analysis of the generator's gradient orders remat < default < every activation
  saved, and remat takes less than half of the last."""
  from apollo_jax import model as model_lib
  x = jax.ShapeDtypeStruct((1, 2, 44100), jnp.float32)

  def temp_bytes(**over):
    cfg = ApolloConfig(feature_dim=32, num_layers=2, num_heads=4, chunk_rows=8, **over)
    params = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
    grad = jax.grad(lambda p, x: jnp.sum(Apollo(cfg).apply({"params": p}, x) ** 2))
    return jax.jit(grad).lower(params, x).compile().memory_analysis().temp_size_in_bytes

  default, remat = temp_bytes(), temp_bytes(remat=True)
  original = model_lib.jax.checkpoint
  try:  # The same chunking with every activation saved (what the step did at first).
    model_lib.jax.checkpoint = lambda fn, **kw: fn
    saved = temp_bytes()
  finally:
    model_lib.jax.checkpoint = original
  assert remat < default < saved and remat < 0.5 * saved, (remat, default, saved)


@pytest.mark.slow
def test_saved_activations_do_not_change_gradients():
  """The default save policy and full rematerialisation differentiate the same function."""
  params = init_params(TINY, jax.random.PRNGKey(5))
  x = jnp.asarray(np.random.default_rng(5).standard_normal((1, 2, 4000)), jnp.float32) * 0.1

  def grads(**over):
    cfg = ApolloConfig(**{**TINY.__dict__, "chunk_rows": 7, **over})
    return jax.jit(jax.grad(lambda p: jnp.sum(Apollo(cfg).apply({"params": p}, x) ** 2)))(params)

  for a, b in zip(jax.tree_util.tree_leaves(grads()), jax.tree_util.tree_leaves(grads(remat=True))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_depthwise_time_conv_gradients_equal_autodiffs():
  """Its hand-written backward pass gives the gradients of the plain sum of shifted slices."""
  from apollo_jax.model import depthwise_time_conv
  rng = np.random.default_rng(6)
  padded, kernel, bias = (jnp.asarray(rng.standard_normal(s), jnp.float32)
                          for s in ((2, 15, 3, 5), (7, 5), (5,)))
  ct = jnp.asarray(rng.standard_normal((2, 9, 3, 5)), jnp.float32)

  def plain(p, k, b):
    return sum(p[:, j:j + 9] * k[j] for j in range(7)) + b

  ours = jax.vjp(depthwise_time_conv, padded, kernel, bias)
  ref = jax.vjp(plain, padded, kernel, bias)
  np.testing.assert_allclose(np.asarray(ours[0]), np.asarray(ref[0]), rtol=1e-6, atol=1e-6)
  for a, b in zip(ours[1](ct), ref[1](ct)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kept", [1, 2])
def test_parameter_gradients_by_sum_leading_equal_autodiffs(kept):
  """``add_bias`` and ``scale`` (RMS norm's weight) give autodiff's gradients of ``x + b`` and
  ``x * w``; their parameter gradients are sums over the leading axes, on CPU one matmul with
  ones (a dot in the compiled gradient, no reduce-window)."""
  from apollo_jax.layers import add_bias, scale, sum_leading
  rng = np.random.default_rng(kept)
  x = jnp.asarray(rng.standard_normal((3, 40, 6, 8)), jnp.float32)
  p = jnp.asarray(rng.standard_normal(x.shape[4 - kept:]), jnp.float32)
  ct = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
  lead = tuple(range(4 - kept))
  x64, ct64 = np.asarray(x, np.float64), np.asarray(ct, np.float64)
  for ours, plain, terms in ((add_bias, lambda x, p: x + p, ct64),
                             (scale, lambda x, p: x * p, x64 * ct64)):
    out, vjp = jax.vjp(ours, x, p)
    ref_out, ref_vjp = jax.vjp(plain, x, p)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref_out))
    (dx, dp), (ref_dx, _) = vjp(ct), ref_vjp(ct)
    np.testing.assert_allclose(np.asarray(dx), np.asarray(ref_dx), rtol=1e-6, atol=1e-6)
    # Against the float64 sum, within float32 rounding of the summed magnitudes (measured 4e-8).
    np.testing.assert_array_less(np.abs(np.asarray(dp) - terms.sum(axis=lead)),
                                 1e-6 * np.abs(terms).sum(axis=lead))
  hlo = jax.jit(jax.grad(lambda p: jnp.sum(add_bias(x, p) ** 2))).lower(p).as_text()
  assert ("dot" in hlo) == (jax.default_backend() == "cpu")
