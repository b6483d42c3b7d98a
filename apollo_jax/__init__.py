"""apollo-jax: Apollo audio restoration (Li & Luo, ICASSP 2025) in JAX/Flax.

The top-level names are imported on first use: ``import apollo_jax.data.heap`` (which
train.py and eval.py run before restarting themselves) must not import jax.
"""

import importlib

_EXPORTS = {
    "ApolloConfig": "apollo_jax.config",
    "Apollo": "apollo_jax.model",
    "count_params": "apollo_jax.model",
    "init_params": "apollo_jax.model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'apollo_jax' has no attribute {name!r}")
