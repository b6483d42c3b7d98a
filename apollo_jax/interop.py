"""Moved to :mod:`apollo_jax.checkpoints` (readers and writers) and
:mod:`apollo_jax.cli.interop` (command line); kept so ``python -m apollo_jax.interop
convert|export|compare`` and ``from apollo_jax.interop import load_torch_generator``
keep working."""

from apollo_jax.checkpoints import CheckpointFormatError, UnsafeCheckpointError  # noqa: F401
from apollo_jax.checkpoints.published import *  # noqa: F401,F403

if __name__ == "__main__":
  from apollo_jax.cli.interop import main
  raise SystemExit(main())
