"""GAN training core: config, train state, optimisers and the sharded train step."""

from apollo_jax.training.config import TrainConfig, default_train_config
from apollo_jax.training.state import (TrainState, create_train_state, lr_schedule,
                                       make_optimizers, replicate)
from apollo_jax.training.step import (DATA_AXIS, batch_sharding, make_mesh, make_train_step,
                                      shard_batch, train_step_fn)

__all__ = [
    "DATA_AXIS", "TrainConfig", "TrainState", "batch_sharding", "create_train_state",
    "default_train_config", "lr_schedule", "make_mesh", "make_optimizers", "make_train_step",
    "replicate", "shard_batch", "train_step_fn",
]
