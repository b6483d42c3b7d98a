"""Discriminator: parity with the published one, spectral-norm semantics, checkpoint import."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from apollo_jax import count_params
from apollo_jax.gan.discriminator import (Discriminator, deinterleave, init_discriminator,
                                          interleave)
from apollo_jax.checkpoints import CheckpointFormatError
from apollo_jax.checkpoints.published import (discriminator_state_dict_from_variables,
                                              discriminator_variables_from_state_dict,
                                              load_torch_discriminator)

TOL = 1e-4  # SPEC.md: max abs error on outputs, float32 on CPU.
SMALL = (32, 64)  # windows for the fast tests


def to_torch(a):
  """Our NHWC map -> torch NCHW."""
  return np.transpose(np.asarray(a), (0, 3, 1, 2))


def tiny_variables(seed=0):
  return init_discriminator(jax.random.PRNGKey(seed), SMALL)


def noise(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32) * 0.1


def test_published_parameter_count():
  variables = init_discriminator(jax.random.PRNGKey(0))  # host-side numpy init: cheap
  assert count_params(variables["params"]) == 2_771_503


@pytest.fixture(scope="module")
def published(parity):
  return load_torch_discriminator(str(parity / "disc_small.safetensors"))


@pytest.mark.slow
def test_eval_outputs_and_feature_maps_match(parity, published):
  ref = np.load(parity / "disc_small_outputs.npz")
  disc = Discriminator()
  apply = jax.jit(lambda v, x: disc.apply(v, x))
  scores, feats = apply(published, ref["disc_crop_input"])
  for i in range(7):
    assert np.abs(to_torch(scores[i]) - ref[f"crop_out_{i}"]).max() <= TOL
    for j in range(6):
      err = np.abs(to_torch(feats[i][j]) - ref[f"crop_fmap_{i}_{j}"]).max()
      assert err <= TOL, f"window {i} layer {j}: {err:.3g}"
  scores, _ = apply(published, np.load(parity / "input.npy"))
  for i in range(7):
    assert np.abs(to_torch(scores[i]) - ref[f"out_{i}"]).max() <= TOL


@pytest.mark.slow
def test_training_application_matches_and_advances_u_v(parity, published):
  ref = np.load(parity / "disc_small_train_outputs.npz")
  disc = Discriminator()
  (scores, feats), new = jax.jit(
      lambda v, x: disc.apply(v, x, train=True, mutable=["spectral"]))(published, ref["disc_crop_input"])
  for i in range(7):
    assert np.abs(to_torch(scores[i]) - ref[f"out_{i}"]).max() <= TOL
    assert np.abs(to_torch(feats[i][0]) - ref[f"fmap_{i}_0"]).max() <= TOL
    for j in range(6):
      for ours, theirs in (("u", "weight_u"), ("v", "weight_v")):
        got = np.asarray(new["spectral"][f"disc_{i}"][f"conv_{j}"][ours])
        want = ref[f"after/discriminators.{i}.discriminator.{j}.0.{theirs}"]
        assert np.abs(got - want).max() <= 1e-5, (i, j, ours)


def test_eval_mode_leaves_u_v_and_needs_no_mutation():
  v = tiny_variables()
  disc = Discriminator(SMALL)
  x = noise((1, 2, 256))
  _, state = jax.jit(lambda v, x: disc.apply(v, x, mutable=["spectral"]))(v, x)
  for a, b in zip(jax.tree.leaves(state["spectral"]), jax.tree.leaves(v["spectral"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(Exception, match="spectral"):
    disc.apply(v, x, train=True)  # training mode must be allowed to update u, v


@pytest.mark.slow
def test_grouped_pass_equals_sequential_applications():
  v = tiny_variables(1)
  disc = Discriminator(SMALL)
  a, b = noise((2, 2, 300), 1), noise((2, 2, 300), 2)
  run = jax.jit(lambda v, x: disc.apply(v, x, train=True, mutable=["spectral"]))
  out_a, s1 = run(v, a)
  out_b, s2 = run({"params": v["params"], **s1}, b)
  out_ab, s12 = jax.jit(lambda v, x: disc.apply(v, x, train=True, mutable=["spectral"], groups=2))(
      v, interleave(a, b))
  got_a, got_b = deinterleave(out_ab, 2)
  for want, got in ((out_a, got_a), (out_b, got_b)):
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-6, rtol=1e-5)
  for w, g in zip(jax.tree.leaves(s2), jax.tree.leaves(s12)):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-7)


@pytest.mark.slow
def test_no_gradient_through_power_iteration():
  # Training-mode gradient == eval-mode gradient with the post-iteration u, v (held fixed).
  v = tiny_variables(2)
  disc = Discriminator(SMALL)
  x = noise((1, 2, 256), 3)
  _, after = jax.jit(lambda v, x: disc.apply(v, x, train=True, mutable=["spectral"]))(v, x)

  def loss_train(p):
    (scores, _), _ = disc.apply({"params": p, "spectral": v["spectral"]}, x, train=True,
                                mutable=["spectral"])
    return sum(jnp.sum(s ** 2) for s in scores)

  def loss_eval(p):
    scores, _ = disc.apply({"params": p, **after}, x)
    return sum(jnp.sum(s ** 2) for s in scores)

  g_train = jax.jit(jax.grad(loss_train))(v["params"])
  g_eval = jax.jit(jax.grad(loss_eval))(v["params"])
  for a, b in zip(jax.tree.leaves(g_train), jax.tree.leaves(g_eval)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-8)


def test_input_shape_is_checked():
  v = tiny_variables()
  with pytest.raises(ValueError, match=r"\(batch, 2, samples\)"):
    jax.eval_shape(lambda v: Discriminator(SMALL).apply(v, jnp.zeros((1, 1, 256))), v)


def test_state_dict_round_trip_and_lightning_prefix(tmp_path):
  from safetensors.numpy import save_file
  v = init_discriminator(jax.random.PRNGKey(3))
  sd = discriminator_state_dict_from_variables(v)
  assert "discriminators.6.discriminator.0.0.weight_orig" in sd
  assert "discriminators.0.discriminator.6.weight" in sd and len(sd) == 182
  back = discriminator_variables_from_state_dict(sd)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(v)):
    np.testing.assert_array_equal(a, np.asarray(b))
  # A Lightning checkpoint holds both networks under prefixes.
  ckpt = {"discriminator." + k: t for k, t in sd.items()}
  ckpt["audio_model.BN.0.0.weight"] = np.ones(11, np.float32)
  save_file(ckpt, str(tmp_path / "last.safetensors"))
  loaded = load_torch_discriminator(str(tmp_path / "last.safetensors"))
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(v)):
    np.testing.assert_array_equal(a, np.asarray(b))
  del sd["discriminators.3.discriminator.2.0.weight_v"]
  with pytest.raises(CheckpointFormatError, match="weight_v"):
    discriminator_variables_from_state_dict(sd)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("hw", [(17, 33), (8, 8), (9, 14), (5, 1)])
@pytest.mark.parametrize("channels", [4, 8])
@pytest.mark.parametrize("outputs", [8, 1])
def test_conv_gradients_equal_xla_convolution(stride, hw, channels, outputs):
  """The custom input gradient (forward convolutions; four parities when strided) and weight
  gradient (four parities when strided; one matmul of shifted ``dy`` for one output on CPU)
  equal the gradients of lax.conv_general_dilated, for odd and even sizes. With 8 input
  channels the forward is XLA's convolution itself; with 4 (on CPU) it is the multiply-adds of
  ``_few_channel_conv``, equal up to float32 rounding; the loss is linear in the output so
  that the gradients compared do not depend on the forward's rounding."""
  from apollo_jax.gan.discriminator import FEW_CHANNELS, _conv_forward, conv3x3
  rng = np.random.default_rng(stride)
  x = jnp.asarray(rng.standard_normal((2, *hw, channels)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((3, 3, channels, outputs)), jnp.float32)
  w = jnp.asarray(rng.standard_normal(_conv_forward(x, k, stride).shape), jnp.float32)
  ours = jax.grad(lambda x, k: jnp.sum(w * conv3x3(x, k, stride)), (0, 1))(x, k)
  ref = jax.grad(lambda x, k: jnp.sum(w * _conv_forward(x, k, stride)), (0, 1))(x, k)
  exact = channels > FEW_CHANNELS
  np.testing.assert_allclose(conv3x3(x, k, stride), _conv_forward(x, k, stride),
                             rtol=0 if exact else 1e-5, atol=0 if exact else 1e-5)
  np.testing.assert_allclose(ours[0], ref[0], rtol=1e-5, atol=1e-5)
  if outputs == 1 and stride == 1:
    # One matmul over all positions: float32 sums of ~1,000 products whose rounding is
    # relative to the gradient's scale (measured 1e-6 of it, XLA's blocked sums 1.5e-7).
    np.testing.assert_allclose(ours[1], ref[1], atol=1e-5 * float(np.abs(ref[1]).max()))
  else:
    np.testing.assert_allclose(ours[1], ref[1], rtol=1e-5, atol=1e-5)


def test_one_output_kernel_grad_is_one_matmul_on_cpu():
  """On CPU the weight gradient of a stride-1 conv with one output feature is a matmul; with
  more outputs XLA's convolution (the forward's value is unused, so only the gradient is left)."""
  from apollo_jax.gan.discriminator import conv3x3
  x = jax.ShapeDtypeStruct((2, 9, 14, 8), jnp.float32)
  grad = lambda out: jax.jit(jax.grad(lambda k, x: jnp.sum(conv3x3(x, k, 1)))).lower(
      jax.ShapeDtypeStruct((3, 3, 8, out), jnp.float32), x).as_text()
  one, many = grad(1), grad(8)
  assert "stablehlo.convolution" not in one and "stablehlo.dot" in one
  assert "stablehlo.convolution" in many


def test_few_channel_conv_is_one_loop_on_cpu():
  """On CPU a convolution of <= FEW_CHANNELS inputs is multiply-adds inside a loop over the
  examples (no XLA convolution), with more inputs XLA's convolution; values agree."""
  from apollo_jax.gan.discriminator import _conv_forward, conv3x3
  x4 = jax.ShapeDtypeStruct((2, 9, 14, 4), jnp.float32)
  x8 = jax.ShapeDtypeStruct((2, 9, 14, 8), jnp.float32)
  k = lambda c: jax.ShapeDtypeStruct((3, 3, c, 8), jnp.float32)
  few = jax.jit(lambda x, k: conv3x3(x, k, 2)).lower(x4, k(4)).as_text()
  many = jax.jit(lambda x, k: conv3x3(x, k, 2)).lower(x8, k(8)).as_text()
  assert "while" in few and "convolution" not in few
  assert "convolution" in many
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((3, 6, 5, 2)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 2, 3)), jnp.float32)
  for stride in (1, 2):
    np.testing.assert_allclose(conv3x3(x, kernel, stride), _conv_forward(x, kernel, stride),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("outputs", [8, 1])
def test_conv_gradients_in_bfloat16(stride, outputs):
  """With bfloat16 inputs (``compute_dtype="bfloat16"``, the GPU/TPU setting) the float32
  result's cotangent is taken to bfloat16 for the weight gradient, whose products are then
  bfloat16 like its input gradient's; both match the float32 gradients to bfloat16 precision.
  (The weight gradient once asked its VJP for a bfloat16 cotangent of a float32 result and
  the bfloat16 training step did not trace.)"""
  from apollo_jax.gan.discriminator import conv3x3
  rng = np.random.default_rng(stride)
  x = jnp.asarray(rng.standard_normal((2, 9, 14, 8)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((3, 3, 8, outputs)), jnp.float32)
  w = jnp.asarray(rng.standard_normal(conv3x3(x, k, stride).shape), jnp.float32)
  loss = lambda x, k: jnp.sum(w * conv3x3(x, k, stride))
  ref = jax.grad(loss, (0, 1))(x, k)
  bf16 = jax.grad(loss, (0, 1))(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
  for ours, want in zip(bf16, ref):
    assert ours.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(ours, np.float32), want,
                               atol=2e-2 * float(np.abs(want).max()))
