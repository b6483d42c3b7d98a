"""Train state (one pytree) and the two optimisers of the GAN."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from apollo_jax.config import ApolloConfig
from apollo_jax.gan.discriminator import init_discriminator
from apollo_jax.model import init_params
from apollo_jax.training.config import TrainConfig


class TrainState(flax.struct.PyTreeNode):
  """Everything that changes during training.

  Attributes:
    step: () int32, train steps taken (including skipped ones).
    gen_params, disc_params: parameter trees (float32).
    disc_spectral: the discriminator's ``spectral`` collection (``u``, ``v`` per conv).
    gen_opt_state, disc_opt_state: optax states of :func:`make_optimizers`.
    nonfinite_g, nonfinite_d: () int32, updates skipped because a loss or gradient was
      NaN/Inf. ``step - nonfinite_x`` is the number of updates applied to that network.
  """

  step: jax.Array
  gen_params: Any
  disc_params: Any
  disc_spectral: Any
  gen_opt_state: Any
  disc_opt_state: Any
  nonfinite_g: jax.Array
  nonfinite_d: jax.Array


class LegacyTrainState(TrainState):
  """The train state as checkpoints before issue 12 stored it: with a PRNG key ``rng`` that
  was split every step and never used. Only for resuming such a run (see
  :meth:`apollo_jax.training.checkpoint.Checkpoints.restore_latest`)."""

  rng: jax.Array


def lr_schedule(base_lr: float, cfg: TrainConfig) -> optax.Schedule:
  """``base_lr * lr_decay ** floor(update / (decay_every_epochs * steps_per_epoch))``.

  Matches torch ``StepLR(step_size=decay_every_epochs, gamma=lr_decay)`` stepped at the end
  of every epoch.
  """
  return optax.exponential_decay(base_lr, cfg.decay_every_epochs * cfg.steps_per_epoch,
                                 cfg.lr_decay, staircase=True)


def make_optimizers(cfg: TrainConfig) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  """``(generator, discriminator)`` chains: global-norm clip, then AdamW with the schedule.

  optax's AdamW equals torch's (decoupled decay ``lr * wd * param`` on every tensor, bias
  corrected moments, eps outside the square root).
  """
  def chain(lr, betas, wd, flat=True):
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm),
        optax.adamw(lr_schedule(lr, cfg), b1=betas[0], b2=betas[1], eps=cfg.adam_eps,
                    weight_decay=wd))
    # On one flat vector: the same arithmetic in a few kernels instead of several per
    # parameter tensor (which dominated the step's compile time).
    return optax.flatten(tx) if flat else tx
  gen = chain(cfg.g_lr, cfg.g_betas, cfg.g_weight_decay, flat=not cfg.freeze_blocks)
  if cfg.freeze_blocks:
    # Fine-tuning: the first blocks get no update at all (no weight decay either).
    frozen = {f"block_{i}" for i in range(cfg.freeze_blocks)}
    labels = lambda params: {k: jax.tree.map(lambda _: "frozen" if k in frozen else "train", v)
                             for k, v in params.items()}
    gen = optax.multi_transform({"train": gen, "frozen": optax.set_to_zero()}, labels)
  return gen, chain(cfg.d_lr, cfg.d_betas, cfg.d_weight_decay)


def create_train_state(gen_cfg: ApolloConfig, train_cfg: TrainConfig, rng: jax.Array,
                       gen_params=None, disc_params=None, disc_spectral=None, *,
                       mesh: Mesh | None = None) -> TrainState:
  """A fresh train state; pass weights to fine-tune or to reproduce a published step.

  Missing pieces are initialised randomly (PyTorch-style). With ``mesh`` the state is
  placed replicated on it, as :func:`apollo_jax.training.make_train_step` expects.
  """
  # Three keys, as when the state also carried one: the same seed gives the same weights.
  k_gen, k_disc, _ = jax.random.split(rng, 3)
  if gen_params is None:
    gen_params = init_params(gen_cfg, k_gen)
  if disc_params is None or disc_spectral is None:
    fresh = init_discriminator(k_disc, train_cfg.windows, train_cfg.channels, train_cfg.d_hidden)
    disc_params = fresh["params"] if disc_params is None else disc_params
    disc_spectral = fresh["spectral"] if disc_spectral is None else disc_spectral
  as_f32 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)
  gen_params, disc_params, disc_spectral = map(as_f32, (gen_params, disc_params, disc_spectral))
  tx_g, tx_d = make_optimizers(train_cfg)
  zero = jnp.zeros((), jnp.int32)
  state = TrainState(step=zero, gen_params=gen_params, disc_params=disc_params,
                     disc_spectral=disc_spectral, gen_opt_state=tx_g.init(gen_params),
                     disc_opt_state=tx_d.init(disc_params), nonfinite_g=zero,
                     nonfinite_d=zero)
  return replicate(state, mesh) if mesh is not None else state


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places every leaf fully replicated on ``mesh`` (works across hosts: each process must
  hold the same values)."""
  sharding = NamedSharding(mesh, PartitionSpec())

  def put(a):
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])
  return jax.tree.map(put, tree)
