"""grain pipelines that yield training batches of (clean, codec-degraded) music.

    MapDataset.range(tracks) -> seed -> shuffle -> random_map(item from seed + index)
      -> repeat -> shard by JAX process -> batch -> to_iter_dataset(small ReadOptions)
      -> mp_prefetch(workers) -> copy out of shared memory

Each item depends only on the seed, the epoch and its index, so batches are the same for
any number of workers, and the iterator state (``get_state``/``set_state``, or orbax with
``grain.checkpoint.CheckpointSave``/``CheckpointRestore``, as the training checkpoints of
:mod:`apollo_jax.training.checkpoint` save it) resumes the exact stream.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from apollo_jax.data import demo, heap, mixing, sources


class MixAndDegrade(grain.transforms.RandomMap):
  """Track index -> training item (``mixing.training_item``). Module-level and made of plain
  data, so it pickles into spawned grain workers."""

  def __init__(self, tracks: list[dict[str, Any]], spec: mixing.MixSpec):
    self.tracks, self.spec, self.bad = tracks, spec, set()

  def random_map(self, element: int, rng: np.random.Generator) -> dict[str, Any]:
    heap.keep_freed_memory()  # Once per process (also in grain workers): ~2x less CPU.
    return mixing.skipping_bad_files(
        lambda i: mixing.training_item(self.tracks, i, rng, self.spec),
        len(self.tracks), int(element), rng, self.bad)


class CropPair(grain.transforms.RandomMap):
  """Pair index -> aligned crop of a clean/degraded file pair (``mixing.paired_item``)."""

  def __init__(self, pairs: list[dict[str, Any]], spec: mixing.MixSpec):
    self.pairs, self.spec, self.bad = pairs, spec, set()

  def random_map(self, element: int, rng: np.random.Generator) -> dict[str, Any]:
    heap.keep_freed_memory()
    return mixing.skipping_bad_files(
        lambda i: mixing.paired_item(self.pairs[i], rng, self.spec),
        len(self.pairs), int(element), rng, self.bad)


def _own_memory(batch: dict[str, Any]) -> dict[str, Any]:
  """Copies a worker's batch out of shared memory (~1 ms per batch of 8 x 3 s stereo).

  grain closes and unlinks a batch's shared-memory segment when its array is deleted, which
  fails while anything still holds a view of the buffer: ``jnp.asarray`` on CPU does (it
  does not copy), so every batch given to JAX stayed in /dev/shm and was reported as a
  leaked shared_memory object at shutdown.
  """
  return {k: np.array(v) for k, v in batch.items()}


def train_index(cfg) -> sources.Index:
  """The training tracks of ``cfg.train_dirs``, or of the demo corpus when it is empty."""
  if cfg.train_dirs:
    return sources.scan(list(cfg.train_dirs), cfg.layout, cfg.segment_seconds,
                        cfg.train_subset, cfg.index_cache or None)
  path = demo.ensure_demo_corpus(cfg.cache_dir, tracks=cfg.demo_tracks,
                                 seconds=cfg.demo_seconds, seed=cfg.demo_seed,
                                 sample_rate=cfg.sample_rate, source=cfg.demo_source,
                                 soundfont=cfg.demo_soundfont or None)
  return sources.scan(path, "stems", cfg.segment_seconds)


def _parse_absl_flags() -> None:
  # grain's mp_prefetch reads absl flags and fails if they were never parsed (e.g. when
  # the caller is not an absl app); mark them parsed with their defaults.
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_train_dataset(cfg, seed: int, global_batch_size: int,
                       shard_options: grain.sharding.ShardOptions | None = None,
                       index: sources.Index | None = None) -> grain.IterDataset:
  """Infinite dataset of batches for this process.

  Args:
    cfg: data config (``default_data_config()``).
    seed: pipeline seed: same seed, same batches.
    global_batch_size: items per step over all processes; each process gets
      ``global_batch_size // shard_count`` of them.
    shard_options: defaults to ``grain.sharding.ShardByJaxProcess(drop_remainder=True)``.
    index: tracks to use (default: ``train_index(cfg)``).

  Returns:
    A ``grain.IterDataset`` of dicts: ``"target"``, ``"degraded"`` float32
    ``(batch, channels, samples)``; ``"bitrate"`` (kbit/s; -1 for paired data), ``"codec"``
    (index into ``cfg.codecs``; -1 for paired data), ``"num_stems"`` (0: a mixture) int32
    ``(batch,)``.
  """
  shard = shard_options or grain.sharding.ShardByJaxProcess(drop_remainder=True)
  if global_batch_size % shard.shard_count:
    raise ValueError(f"global_batch_size={global_batch_size} is not divisible by the "
                     f"{shard.shard_count} data shards (JAX processes)")
  index = index or train_index(cfg)
  spec = mixing.MixSpec.from_config(cfg)
  if index.layout == "paired":
    transform = CropPair(index.tracks, spec)
  else:
    transform = MixAndDegrade(index.tracks, spec)
  ds = grain.MapDataset.range(len(index.tracks)).seed(seed).shuffle().random_map(transform)
  ds = ds.repeat()[shard.shard_index::shard.shard_count]
  ds = ds.batch(global_batch_size // shard.shard_count, drop_remainder=True)
  # The defaults (16 threads, 500 buffered elements) would hold gigabytes of audio.
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads,
                                            prefetch_buffer_size=cfg.read_buffer))
  if cfg.num_workers > 0:
    _parse_absl_flags()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=cfg.num_workers, per_worker_buffer_size=cfg.worker_buffer)).map(_own_memory)
  return ds


def make_train_iterator(cfg, seed: int, global_batch_size: int,
                        shard_options: grain.sharding.ShardOptions | None = None,
                        index: sources.Index | None = None) -> grain.DatasetIterator:
  """``iter(make_train_dataset(...))``: call ``close()`` on it when done with workers."""
  return iter(make_train_dataset(cfg, seed, global_batch_size, shard_options, index))
