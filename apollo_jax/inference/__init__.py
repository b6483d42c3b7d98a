"""Inference algorithms (no command lines; those are in :mod:`apollo_jax.cli`).

- :mod:`~apollo_jax.inference.chunked`: restore audio of any length in bounded memory
  (fixed-size chunks, crossfaded overlap-add); its public names are re-exported here.
- :mod:`~apollo_jax.inference.streaming`: one hop in, one restored hop out.
- :mod:`~apollo_jax.inference.deploy`: StableHLO / ONNX exports of the generator.

Generators come from :func:`apollo_jax.checkpoints.load_generator`.
"""

from apollo_jax.inference.chunked import (DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS,
                                          ChunkedRestorer, restore_array, select_device)

__all__ = ["DEFAULT_CHUNK_SECONDS", "DEFAULT_OVERLAP_SECONDS", "ChunkedRestorer",
           "restore_array", "select_device"]
