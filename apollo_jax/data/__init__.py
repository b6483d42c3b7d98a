"""Training and validation data: sources, mixing, codec degradation, grain pipelines.

See ``docs/README_data.md``. The main entry points:

- ``default_data_config()``: the data settings (an ``ml_collections.ConfigDict``).
- ``make_train_iterator(cfg, seed, global_batch_size)``: batches of
  ``{"target", "degraded"}`` float32 ``(batch, channels, samples)`` for this process.
- ``ensure_validation_set(cfg)`` and ``ValidationSet(dir)``: the fixed validation pairs.
- ``ensure_demo_corpus(cache_dir, ...)``: the procedurally generated demo music.

Names are imported on first use, so ``python -m apollo_jax.data.demo`` does not import
its own module twice and light users do not pay for grain.
"""

import importlib

_EXPORTS = {
    "default_data_config": "config",
    "ensure_demo_corpus": "demo",
    "make_train_dataset": "pipeline",
    "make_train_iterator": "pipeline",
    "train_index": "pipeline",
    "LAYOUTS": "sources",
    "DataError": "sources",
    "Index": "sources",
    "scan": "sources",
    "ValidationSet": "validation",
    "ensure_validation_set": "validation",
    "write_validation_set": "validation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(f"apollo_jax.data.{_EXPORTS[name]}"), name)
  raise AttributeError(f"module 'apollo_jax.data' has no attribute {name!r}")
