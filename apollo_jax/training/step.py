"""The GAN train step: one pure function, jit-compiled with explicit shardings.

Order (as published): generator forward once; discriminator update on the detached output;
generator update against the updated discriminator. Each window's STFT of the target and of
the generator output is computed once and shared by the reconstruction loss and every
discriminator application (the discriminator only rescales it).

Spectral norm: with ``spectral_norm_updates_per_step=4`` ``u, v`` advance four times per step
as in the published step, which calls D in training mode on fake, real (D step), fake, real
(G step). Here fake and real share one D pass in the D step: the pass runs two power
iterations and normalises the fake rows with the first estimate and the real rows with the
second, which is the same computation. The G step applies D to fake, then to real; the real
pass is a constant of the G update and gets no backward pass. With ``1`` the D step's pass
runs one power iteration for both and the G step uses eval mode.

A network whose loss or gradients are not finite is not updated that step (params and
optimiser state kept, ``nonfinite_*`` counter incremented).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from apollo_jax.config import ApolloConfig
from apollo_jax.gan.discriminator import Discriminator, deinterleave, interleave
from apollo_jax.gan.losses import (feature_matching_loss, log_magnitude_loss, lsgan_d_loss,
                                   lsgan_g_loss, stft_magnitude_loss)
from apollo_jax.model import Apollo
from apollo_jax.spectral import multi_stft
from apollo_jax.training.config import TrainConfig
from apollo_jax.training.state import TrainState, lr_schedule, make_optimizers

DATA_AXIS = "data"
Batch = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]


def make_mesh(devices=None) -> Mesh:
  """1-D ``data`` mesh over ``devices`` (default: all devices of all hosts).

  Axis type Auto: shardings inside the step are propagated by the compiler.
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``data``."""
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def shard_batch(batch: Batch, mesh: Mesh) -> Batch:
  """Host arrays -> global batch arrays sharded over ``data``.

  Each process passes its own slice of the global batch (all of it on one host).
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, jnp.asarray(v, jnp.float32))
          for k, v in batch.items()}


def _finite(*arrays: jax.Array) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in arrays]))


def _where(ok: jax.Array, new, old):
  """``new`` if ``ok`` else ``old``, for whole pytrees as one flat select (one kernel, not
  one per leaf: the per-leaf ops were thousands of the step's kernels and its compile time)."""
  flat_new, unravel = ravel_pytree(new)
  return unravel(jnp.where(ok, flat_new, ravel_pytree(old)[0]))


def _apply_if_finite(tx: optax.GradientTransformation, loss, grads, opt_state, params):
  """``(params, opt_state, ok, grad_norm)``: updated when ``loss`` and ``grads`` are finite,
  else unchanged."""
  flat_grads = ravel_pytree(grads)[0]
  ok = _finite(loss, flat_grads)
  updates, new_opt_state = tx.update(grads, opt_state, params)
  flat_params, unravel = ravel_pytree(params)
  new_params = unravel(jnp.where(ok, flat_params + ravel_pytree(updates)[0], flat_params))
  return new_params, _where(ok, new_opt_state, opt_state), ok, jnp.linalg.norm(flat_grads)


def step_discriminator(gen_cfg: ApolloConfig, cfg: TrainConfig) -> Discriminator:
  """The discriminator the step trains: windows, channels and width from ``cfg``, matmul
  dtype from the generator config (one place, so benchmarks time the same network)."""
  return Discriminator(cfg.windows, cfg.channels, cfg.d_hidden, gen_cfg.compute_dtype)


def train_step_fn(gen_cfg: ApolloConfig, cfg: TrainConfig) -> StepFn:
  """The un-jitted step ``(state, batch) -> (state, metrics)``.

  ``batch = {"target": (batch, channels, samples), "degraded": same}`` float32. Metrics (scalars):
  ``loss_d, loss_g, loss_g_rec, loss_g_adv, loss_g_fm, grad_norm_d, grad_norm_g`` (before
  clipping), ``lr_d, lr_g`` (used this step), ``nonfinite_d, nonfinite_g`` (totals).
  """
  gen = Apollo(gen_cfg)
  disc = step_discriminator(gen_cfg, cfg)
  tx_g, tx_d = make_optimizers(cfg)
  sched_g, sched_d = lr_schedule(cfg.g_lr, cfg), lr_schedule(cfg.d_lr, cfg)
  # D update: fake and real go through D together, interleaved. Published (4 updates): the
  # two halves are two groups, i.e. two power iterations in one pass, fake first. G update:
  # fake, then real (as published); the real pass is a constant of the G update, so it has
  # no backward pass. Cheap (1 update): one group in the D update, eval mode in the G update.
  groups = 2 if cfg.spectral_norm_updates_per_step == 4 else 1
  g_train = cfg.spectral_norm_updates_per_step == 4

  def discriminate(params, spectral, x, spectra, train, groups=1):
    """``((scores, features), new spectral state)`` of D on ``x`` (batch, channels, samples)."""
    variables = {"params": params, "spectral": spectral}
    if train:
      out, mutated = disc.apply(variables, x, train=True, spectra=spectra, groups=groups,
                                mutable=["spectral"])
      return out, mutated["spectral"]
    return disc.apply(variables, x, spectra=spectra), spectral

  def step(state: TrainState, batch: Batch):
    target = batch["target"].astype(jnp.float32)
    degraded = batch["degraded"].astype(jnp.float32)
    if target.shape != degraded.shape or target.ndim != 3:
      raise ValueError(f"batch target {target.shape} / degraded {degraded.shape} must both be "
                       "(batch, channels, samples)")

    # Generator forward once; each window's STFT of fake and real once.
    fake, gen_vjp = jax.vjp(lambda p: gen.apply({"params": p}, degraded), state.gen_params)
    spectra, spectra_vjp = jax.vjp(
        lambda f: multi_stft(interleave(f, target), cfg.windows), fake)
    real_spectra = deinterleave(spectra, 2)[1]

    # Discriminator update on the generator output as a constant.
    def d_loss(params):
      out, spectral = discriminate(params, state.disc_spectral, interleave(fake, target),
                                   spectra, train=True, groups=groups)
      (fake_scores, _), (real_scores, _) = deinterleave(out, 2)
      return lsgan_d_loss(real_scores, fake_scores), spectral

    (loss_d, spectral), grads_d = jax.value_and_grad(d_loss, has_aux=True)(state.disc_params)
    disc_params, disc_opt_state, ok_d, grad_norm_d = _apply_if_finite(
        tx_d, loss_d, grads_d, state.disc_opt_state, state.disc_params)
    spectral = _where(_finite(ravel_pytree(spectral)[0]), spectral, state.disc_spectral)

    # Generator update against the updated discriminator; real feature maps are constants.
    def g_loss(fake, spectra):
      fake_spectra = deinterleave(spectra, 2)[0]
      (fake_scores, fake_feats), new_spectral = discriminate(
          disc_params, spectral, fake, fake_spectra, train=g_train)
      (_, real_feats), new_spectral = discriminate(
          disc_params, new_spectral, target, real_spectra, train=g_train)
      rec = stft_magnitude_loss(fake_spectra, real_spectra)
      adv = lsgan_g_loss(fake_scores)
      fm = feature_matching_loss(fake_feats, real_feats)
      total = cfg.rec_weight * rec + cfg.adv_weight * adv + cfg.fm_weight * fm
      extra = {}
      if cfg.log_mag_weight:  # Off in the published recipe: not even traced then.
        extra["loss_g_logmag"] = log_magnitude_loss(fake_spectra, real_spectra)
        total = total + cfg.log_mag_weight * extra["loss_g_logmag"]
      return total, (rec, adv, fm, extra, new_spectral)

    (loss_g, (rec, adv, fm, extra, spectral_g)), (d_fake, d_spectra) = jax.value_and_grad(
        g_loss, argnums=(0, 1), has_aux=True)(fake, spectra)
    (grads_g,) = gen_vjp(d_fake + spectra_vjp(d_spectra)[0])
    gen_params, gen_opt_state, ok_g, grad_norm_g = _apply_if_finite(
        tx_g, loss_g, grads_g, state.gen_opt_state, state.gen_params)
    spectral = _where(_finite(ravel_pytree(spectral_g)[0]), spectral_g, spectral)

    nonfinite_d = state.nonfinite_d + (~ok_d).astype(jnp.int32)
    nonfinite_g = state.nonfinite_g + (~ok_g).astype(jnp.int32)
    new_state = TrainState(
        step=state.step + 1, gen_params=gen_params, disc_params=disc_params,
        disc_spectral=spectral, gen_opt_state=gen_opt_state, disc_opt_state=disc_opt_state,
        nonfinite_g=nonfinite_g, nonfinite_d=nonfinite_d)
    metrics = {
        "loss_d": loss_d, "loss_g": loss_g, "loss_g_rec": rec, "loss_g_adv": adv,
        "loss_g_fm": fm, **extra, "grad_norm_d": grad_norm_d, "grad_norm_g": grad_norm_g,
        "lr_d": sched_d(state.step - state.nonfinite_d),
        "lr_g": sched_g(state.step - state.nonfinite_g),
        "nonfinite_d": nonfinite_d, "nonfinite_g": nonfinite_g,
    }
    return new_state, metrics

  return step


def step_compiler_options(mesh: Mesh) -> dict[str, str] | None:
  """XLA options the step is compiled with: on CPU, YNNPACK for the matmuls only, so that the
  discriminator's convolutions (and reductions) run as XLA:CPU's own kernels.

  Measured with in-process A/Bs on 2 CPU cores, both orders (docs/training_cost.md):
  the step 2-3 % faster (demo, paper 1 s), ~5 % at 64/2, smaller temporaries everywhere,
  the compile 3-16 s longer. None elsewhere.
  """
  if mesh.devices.flat[0].platform != "cpu":
    return None
  return {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def make_train_step(gen_cfg: ApolloConfig, train_cfg: TrainConfig, mesh: Mesh) -> StepFn:
  """``jax.jit`` of :func:`train_step_fn` on ``mesh``.

  The batch is sharded over the ``data`` axis (the global batch must divide by the number
  of devices), state and metrics are replicated, and the input state is donated: do not use
  it after the call. Compiled with :func:`step_compiler_options`.
  """
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.jit(train_step_fn(gen_cfg, train_cfg),
                 in_shardings=(replicated, batch_sharding(mesh)),
                 out_shardings=(replicated, replicated), donate_argnums=(0,),
                 compiler_options=step_compiler_options(mesh))
