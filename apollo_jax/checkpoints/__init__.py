"""Checkpoints: every format we read or write, and the one error type they raise.

- :mod:`~apollo_jax.checkpoints.torch_pickle`: PyTorch zip pickles read without torch and
  without running code from them.
- :mod:`~apollo_jax.checkpoints.published`: the published state-dict names, config inference
  from shapes, ``.safetensors`` export (``load_torch_generator``, ``save_torch_generator``).
- :mod:`~apollo_jax.checkpoints.orbax`: our orbax params folders and training runs' steps
  (``save_generator``; the path constants ``train.py``'s checkpoints share).
- :mod:`~apollo_jax.checkpoints.errors`: ``CheckpointFormatError`` (any unreadable
  checkpoint), ``UnsafeCheckpointError`` (a pickle naming code), ``CHECKPOINT_ERRORS``.

:func:`load_generator` reads any of them.
"""

from __future__ import annotations

import os

from apollo_jax.checkpoints.errors import (CHECKPOINT_ERRORS, CheckpointFormatError,
                                           UnsafeCheckpointError)
from apollo_jax.checkpoints.orbax import load_orbax_generator, save_generator
from apollo_jax.checkpoints.published import load_torch_generator, save_torch_generator
from apollo_jax.config import ApolloConfig

__all__ = [
    "CHECKPOINT_ERRORS", "CheckpointFormatError", "UnsafeCheckpointError", "load_generator",
    "load_torch_generator", "save_generator", "save_torch_generator",
]


def load_generator(checkpoint: str, sample_rate: int | None = None,
                   win_ms: float | None = None) -> tuple[ApolloConfig, dict]:
  """Loads generator ``(config, params)`` from any supported checkpoint (module docstring).

  Args:
    checkpoint: a published PyTorch file, a ``.safetensors`` state dict, an orbax params
      directory or the root of an orbax CheckpointManager.
    sample_rate: for state dicts that do not record it (default: inferred from the FFT
      size with the published 20 ms window, see ``published.config_from_state_dict``). A
      file that records its rate (``model_args``, safetensors metadata, orbax
      ``config.json``) wins, and a different value here is an error.
    win_ms: the STFT window in ms, likewise (default 20 ms when inferring the rate).

  Returns:
    ``(ApolloConfig, params)`` with ``params`` a nested dict of float32 numpy arrays.

  Raises:
    FileNotFoundError: nothing at ``checkpoint``.
    CheckpointFormatError: not a checkpoint, no generator in it, or shapes that do not fit
      each other or the config.
    UnsafeCheckpointError: a pickle that names code to run (refused, nothing was run).
  """
  if not os.path.exists(checkpoint):
    raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
  if not os.path.isdir(checkpoint):
    return load_torch_generator(checkpoint, sample_rate, win_ms)
  cfg, params = load_orbax_generator(checkpoint)
  # Our folders always record the config: an explicit flag can only agree with it.
  for flag, value, recorded in (("--sample-rate", sample_rate, cfg.sample_rate),
                                ("--win-ms", win_ms, cfg.win_ms)):
    if value is not None and float(value) != float(recorded):
      raise CheckpointFormatError(
          f"{checkpoint} was trained with {flag[2:].replace('-', '_')}={recorded:g} (its "
          f"config.json), but {flag} {value:g} was given")
  return cfg, params
