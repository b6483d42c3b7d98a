"""Hyperparameters of the GAN training step (optimisers, losses, precision)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from apollo_jax.config import JsonConfig
from apollo_jax.gan.discriminator import WINDOWS


@dataclasses.dataclass(frozen=True)
class TrainConfig(JsonConfig):
  """Training-step knobs. Defaults reproduce the published recipe (SPEC.md, "Losses").

  Attributes:
    g_lr, g_weight_decay, g_betas: generator AdamW.
    d_lr, d_weight_decay, d_betas: discriminator AdamW.
    adam_eps: AdamW epsilon (torch's default, 1e-8) for both.
    clip_norm: global gradient-norm clip, applied to each network separately.
    lr_decay: learning-rate factor applied every ``decay_every_epochs`` epochs (staircase).
    decay_every_epochs: epochs between decays.
    steps_per_epoch: optimiser steps per epoch (the published run: 40000 examples per
      epoch on 8 devices with batch 1 each = 5000).
    rec_weight, adv_weight, fm_weight: generator loss weights (reconstruction, LSGAN,
      feature matching).
    log_mag_weight: weight of the log-magnitude reconstruction term
      (:func:`apollo_jax.gan.losses.log_magnitude_loss`); 0 (the published recipe) leaves it
      out of the step.
    windows: STFT windows of the discriminator and of the reconstruction loss.
    d_hidden: features of each sub-discriminator's first conv (doubling per conv up to
      ``32 * d_hidden``); 8 is published. A smaller D is cheaper: the step of a small
      generator is mostly the discriminator's.
    channels: audio channels of a training segment (the discriminator's input); must equal
      ``config.data.channels`` (``configs/apollo.py`` derives it from there).

  The matmul dtype of both networks is the generator config's ``compute_dtype``
  (:class:`~apollo_jax.config.ApolloConfig`), declared there only.
    spectral_norm_updates_per_step: 4 (published: D applied four times in training mode per
      step, one power iteration each) or 1 (one training-mode application of D on real and
      fake together for the D update; the G update uses D in eval mode).
    freeze_blocks: fine-tuning: the first N band-sequence blocks of the generator are not
      updated (their gradients are dropped before clipping).
  """

  g_lr: float = 1e-3
  g_weight_decay: float = 0.01
  g_betas: tuple[float, float] = (0.9, 0.999)
  d_lr: float = 1e-4
  d_weight_decay: float = 0.01
  d_betas: tuple[float, float] = (0.5, 0.99)
  adam_eps: float = 1e-8
  clip_norm: float = 5.0
  lr_decay: float = 0.98
  decay_every_epochs: int = 2
  steps_per_epoch: int = 5000
  rec_weight: float = 1.0
  adv_weight: float = 1.0
  fm_weight: float = 1.0
  log_mag_weight: float = 0.0
  windows: tuple[int, ...] = WINDOWS
  d_hidden: int = 8
  channels: int = 2
  spectral_norm_updates_per_step: int = 4
  freeze_blocks: int = 0

  def __post_init__(self):
    # Lists (from JSON or a ConfigDict) become tuples so the config stays hashable.
    for name in ("g_betas", "d_betas", "windows"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    if self.spectral_norm_updates_per_step not in (1, 4):
      raise ValueError(
          f"spectral_norm_updates_per_step must be 4 (published) or 1, got "
          f"{self.spectral_norm_updates_per_step}")
    if self.steps_per_epoch < 1 or self.decay_every_epochs < 1:
      raise ValueError(
          f"steps_per_epoch ({self.steps_per_epoch}) and decay_every_epochs "
          f"({self.decay_every_epochs}) must be positive")
    for name in ("g_betas", "d_betas"):
      if len(getattr(self, name)) != 2:
        raise ValueError(f"{name} must have two values, got {getattr(self, name)}")

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
    if "compute_dtype" in d:  # a config written before the field moved (one owner)
      raise ValueError(
          "compute_dtype is no longer a TrainConfig field: it is the model's "
          "(config.model.compute_dtype, ApolloConfig), which sets the dtype of both networks; "
          f"move train.compute_dtype={d['compute_dtype']!r} there")
    return super().from_dict(d)


def default_train_config() -> TrainConfig:
  """The published recipe: AdamW G 1e-3 / D 1e-4, clip 5, x0.98 every 2 epochs, 4 SN updates."""
  return TrainConfig()
