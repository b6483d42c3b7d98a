"""Train step on a tiny model: updates, non-finite guard, spectral-norm modes, optimiser."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from apollo_jax.gan.discriminator import Discriminator, _conv_forward
from apollo_jax.training import (TrainConfig, create_train_state, default_train_config,
                                 lr_schedule, make_mesh, make_optimizers, make_train_step,
                                 shard_batch, train_step_fn)
from apollo_jax.training.step import step_compiler_options
from tests.conftest import TINY, TINY_WINDOWS

CFG = TrainConfig(windows=TINY_WINDOWS, steps_per_epoch=3)
SAMPLES = 2048


def make_batch(seed=0, batch=1):
  rng = np.random.default_rng(seed)
  target = rng.standard_normal((batch, 2, SAMPLES)).astype(np.float32) * 0.1
  degraded = target + 0.01 * rng.standard_normal(target.shape).astype(np.float32)
  return {"target": target, "degraded": degraded}


@pytest.fixture(scope="module")
def mesh():
  return make_mesh(jax.devices()[:1])


@pytest.fixture(scope="module")
def step4(mesh):
  return make_train_step(TINY, CFG, mesh)


def fresh_state(mesh, cfg=CFG, seed=0):
  return create_train_state(TINY, cfg, jax.random.PRNGKey(seed), mesh=mesh)


def host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def max_diff(a, b):
  return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.slow
def test_step_updates_both_networks_and_reports_metrics(mesh, step4):
  state = fresh_state(mesh)
  before = host(state)
  state, metrics = step4(state, shard_batch(make_batch(), mesh))
  state, metrics = step4(state, shard_batch(make_batch(1), mesh))
  m = host(metrics)
  for key in ("loss_d", "loss_g", "loss_g_rec", "loss_g_adv", "loss_g_fm", "grad_norm_d",
              "grad_norm_g"):
    assert np.isfinite(m[key]) and m[key] > 0, key
  np.testing.assert_allclose(m["loss_g"], m["loss_g_rec"] + m["loss_g_adv"] + m["loss_g_fm"], rtol=1e-6)
  assert (m["lr_g"], m["lr_d"]) == (np.float32(1e-3), np.float32(1e-4))
  assert int(state.step) == 2 and int(m["nonfinite_g"]) == 0 and int(m["nonfinite_d"]) == 0
  assert max_diff(state.gen_params, before.gen_params) > 0
  assert max_diff(state.disc_params, before.disc_params) > 0
  assert max_diff(state.disc_spectral, before.disc_spectral) > 0


@pytest.mark.slow
def test_nonfinite_batch_is_skipped(mesh, step4):
  state = fresh_state(mesh, seed=1)
  before = host(state)
  bad = make_batch(2)
  bad["degraded"][0, 1, 100] = np.nan
  state, metrics = step4(state, shard_batch(bad, mesh))
  assert int(state.nonfinite_g) == 1 and int(state.nonfinite_d) == 1 and int(state.step) == 1
  for name in ("gen_params", "disc_params", "gen_opt_state", "disc_opt_state"):
    assert max_diff(getattr(state, name), getattr(before, name)) == 0.0, name
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(host(state)))
  # Training continues normally afterwards.
  state, metrics = step4(state, shard_batch(make_batch(3), mesh))
  assert int(state.nonfinite_g) == 1 and np.isfinite(float(metrics["loss_g"]))
  assert max_diff(state.gen_params, before.gen_params) > 0


@pytest.mark.slow
def test_published_mode_advances_u_v_four_times(mesh, step4):
  state = fresh_state(mesh, seed=2)
  before = host(state)
  state, _ = step4(state, shard_batch(make_batch(4), mesh))
  disc = Discriminator(CFG.windows)
  x = jnp.zeros((2, 2, SAMPLES))  # u, v do not depend on the input
  iterate = lambda params, spectral: disc.apply({"params": params, "spectral": spectral}, x,
                                                 train=True, groups=2, mutable=["spectral"])[1]["spectral"]
  want = iterate(host(state).disc_params, iterate(before.disc_params, before.disc_spectral))
  assert max_diff(state.disc_spectral, want) <= 1e-6


@pytest.mark.slow
def test_bfloat16_step_tracks_the_float32_step(mesh, step4):
  """``compute_dtype="bfloat16"`` (the GPU/TPU setting; both networks' matmul inputs) runs
  the whole step, and its losses and gradient norms are the float32 step's to bfloat16
  precision (the same state and batch)."""
  import dataclasses
  bf16 = dataclasses.replace(TINY, compute_dtype="bfloat16")
  batch = shard_batch(make_batch(), mesh)
  _, want = step4(fresh_state(mesh), batch)
  _, got = make_train_step(bf16, CFG, mesh)(fresh_state(mesh), batch)
  want, got = host(want), host(got)
  for key in ("loss_d", "loss_g", "loss_g_rec", "grad_norm_d", "grad_norm_g"):
    assert np.isfinite(got[key]), key
    np.testing.assert_allclose(got[key], want[key], rtol=5e-2, err_msg=key)
  assert int(got["nonfinite_g"]) == 0 and int(got["nonfinite_d"]) == 0


@pytest.mark.slow
def test_cheap_mode_advances_u_v_once(mesh):
  cfg = TrainConfig(windows=CFG.windows, spectral_norm_updates_per_step=1)
  state = fresh_state(mesh, cfg, seed=3)
  before = host(state)
  state, metrics = make_train_step(TINY, cfg, mesh)(state, shard_batch(make_batch(5), mesh))
  assert np.isfinite(float(metrics["loss_g"]))
  disc = Discriminator(cfg.windows)
  _, want = disc.apply({"params": before.disc_params, "spectral": before.disc_spectral},
                       jnp.zeros((1, 2, SAMPLES)), train=True, mutable=["spectral"])
  assert max_diff(state.disc_spectral, want["spectral"]) <= 1e-6


def torch_adamw(params, grads_seq, lr, betas, eps, wd):
  """torch.optim.AdamW's update rule, written out from its documentation."""
  p, m, v = params.astype(np.float64), 0.0, 0.0
  for t, g in enumerate(grads_seq, start=1):
    p = p * (1 - lr * wd)
    m = betas[0] * m + (1 - betas[0]) * g
    v = betas[1] * v + (1 - betas[1]) * g * g
    m_hat, v_hat = m / (1 - betas[0] ** t), v / (1 - betas[1] ** t)
    p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
  return p


def test_optimisers_match_torch_adamw():
  cfg = default_train_config()
  tx_g, tx_d = make_optimizers(cfg)
  rng = np.random.default_rng(0)
  p0 = rng.standard_normal(50).astype(np.float32)
  grads = [rng.standard_normal(50).astype(np.float32) * 0.01 for _ in range(3)]
  for tx, lr, betas in ((tx_g, cfg.g_lr, cfg.g_betas), (tx_d, cfg.d_lr, cfg.d_betas)):
    p, s = jnp.asarray(p0), tx.init(jnp.asarray(p0))
    for g in grads:
      u, s = tx.update(jnp.asarray(g), s, p)
      p = p + u
    want = torch_adamw(p0, grads, lr, betas, cfg.adam_eps, 0.01)
    np.testing.assert_allclose(np.asarray(p), want, atol=1e-7)


def test_global_norm_clip_at_5():
  cfg = TrainConfig(g_weight_decay=0.0)
  tx_g, _ = make_optimizers(cfg)
  p0 = np.zeros(4, np.float32)
  grads = [np.full(4, 10.0, np.float32), np.full(4, 0.1, np.float32)]  # norms 20, 0.2
  p, s = jnp.asarray(p0), tx_g.init(jnp.asarray(p0))
  for g in grads:
    u, s = tx_g.update(jnp.asarray(g), s, p)
    p = p + u
  # Adam is scale invariant on its first step; the clip shows in the second.
  want = torch_adamw(p0, [grads[0] * 5 / 20, grads[1]], cfg.g_lr, cfg.g_betas, cfg.adam_eps, 0.0)
  np.testing.assert_allclose(np.asarray(p), want, rtol=1e-5)
  unclipped = torch_adamw(p0, grads, cfg.g_lr, cfg.g_betas, cfg.adam_eps, 0.0)
  assert np.abs(unclipped - want).max() > 1e-5


def test_lr_schedule_is_staircase_every_two_epochs():
  sched = lr_schedule(1e-3, TrainConfig(steps_per_epoch=10))
  got = [float(sched(s)) for s in (0, 19, 20, 39, 40)]
  np.testing.assert_allclose(got, [1e-3, 1e-3, 0.98e-3, 0.98e-3, 0.98 ** 2 * 1e-3], rtol=1e-6)


def test_train_config_validation_and_round_trip():
  cfg = TrainConfig.from_dict({"windows": [32, 64], "g_betas": [0.8, 0.99]})
  assert cfg.windows == (32, 64) and cfg.g_betas == (0.8, 0.99)
  assert TrainConfig.from_json(cfg.to_json()) == cfg
  with pytest.raises(ValueError, match="spectral_norm_updates_per_step"):
    TrainConfig(spectral_norm_updates_per_step=2)
  with pytest.raises(ValueError, match="unknown"):
    TrainConfig.from_dict({"learning_rate": 1.0})


def test_d_hidden_sets_the_discriminator_width_of_state_and_step(mesh):
  """The state's D and the step's D agree on ``d_hidden`` (traced only: no compile)."""
  cfg = TrainConfig(windows=TINY_WINDOWS, d_hidden=2)
  state = fresh_state(mesh, cfg)
  widths = [state.disc_params["disc_0"][f"conv_{j}"]["kernel"].shape[-1] for j in range(7)]
  assert widths == [2, 4, 8, 16, 32, 64, 1]
  batch = {k: jnp.asarray(v) for k, v in make_batch().items()}
  new_state, _ = jax.eval_shape(train_step_fn(TINY, cfg), state, batch)
  assert jax.tree.map(lambda a: a.shape, new_state.disc_params) == jax.tree.map(
      lambda a: a.shape, state.disc_params)


def test_cpu_step_leaves_convolutions_to_xla(mesh):
  """On CPU the step is compiled with YNNPACK for matmuls only (docs/training_cost.md,
  third sitting): XLA accepts the option, and a convolution compiled with it is XLA's own, where
  the default makes it a YNNPACK fusion. If a jax upgrade changes this, re-measure."""
  options = step_compiler_options(mesh)
  assert options == {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
  x = jax.ShapeDtypeStruct((1, 16, 16, 32), jnp.float32)
  k = jax.ShapeDtypeStruct((3, 3, 32, 64), jnp.float32)
  conv = lambda x, k: _conv_forward(x, k, 1)
  default = jax.jit(conv).lower(x, k).compile().as_text()
  ours = jax.jit(conv, compiler_options=options).lower(x, k).compile().as_text()
  assert "ynn_fusion" in default
  assert "ynn_fusion" not in ours and "convolution(" in ours


@pytest.mark.slow  # ~10 s: a real orbax save and two restores of the whole state
def test_checkpoint_with_the_old_unused_rng_resumes(mesh, tmp_path):
  # Issue 12: TrainState no longer carries a PRNG key (split every step, never used). A run
  # checkpointed with it resumes: the state comes back without the key, everything equal.
  import dataclasses
  import grain
  from apollo_jax.training.checkpoint import Checkpoints, abstract
  from apollo_jax.training.state import LegacyTrainState, TrainState
  state = fresh_state(mesh)
  fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(TrainState)}
  old = LegacyTrainState(**fields, rng=jax.random.key_data(jax.random.PRNGKey(1)))
  it = iter(grain.MapDataset.range(8).to_iter_dataset())
  next(it)
  ckpts = Checkpoints(str(tmp_path), keep=1, gen_config_json=TINY.to_json())
  ckpts.save(3, old, it, {"best_step": -1})
  ckpts.wait()
  resumed = iter(grain.MapDataset.range(8).to_iter_dataset())
  got, meta = ckpts.restore_latest(abstract(state), resumed)
  ckpts.close()
  assert type(got) is TrainState and meta == {"best_step": -1}
  jax.tree.map(np.testing.assert_array_equal, host(got), host(state))
  assert int(next(resumed)) == 1  # the data position came back too
