"""Training and validation data: sources, mixing, codec degradation, grain pipelines.

See ``docs/README_data.md``. The main entry points:

- ``default_data_config()``: the data settings (an ``ml_collections.ConfigDict``).
- ``make_train_iterator(cfg, seed, global_batch_size)``: batches of
  ``{"target", "degraded"}`` float32 ``(batch, channels, samples)`` for this process.
- ``ensure_validation_set(cfg)`` and ``ValidationSet(dir)``: the fixed validation pairs.
- ``ensure_demo_corpus(cache_dir, ...)``: the procedurally generated demo music.
"""

from apollo_jax.data.config import default_data_config
from apollo_jax.data.demo import ensure_demo_corpus
from apollo_jax.data.pipeline import (make_train_dataset, make_train_iterator,
                                      restore_iterator, save_iterator, train_index)
from apollo_jax.data.sources import LAYOUTS, DataError, Index, scan
from apollo_jax.data.validation import ValidationSet, ensure_validation_set, write_validation_set

__all__ = [
    "LAYOUTS", "DataError", "Index", "ValidationSet", "default_data_config",
    "ensure_demo_corpus", "ensure_validation_set", "make_train_dataset", "make_train_iterator",
    "restore_iterator", "save_iterator", "scan", "train_index", "write_validation_set",
]
