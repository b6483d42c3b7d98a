"""Inference: load a generator from any checkpoint and restore audio in bounded memory.

Checkpoints (:func:`load_generator`)
------------------------------------
1. A published PyTorch file (``.bin/.pth/.pt/.ckpt``: release format, Lightning checkpoint
   or bare state dict) or a ``.safetensors`` state dict, read by :mod:`apollo_jax.interop`
   without torch and without running code from the file.
2. An **orbax params directory**, as written by :func:`save_generator` and
   ``python -m apollo_jax.interop convert``::

     <dir>/config.json    ApolloConfig.to_json()
     <dir>/params/        orbax PyTree checkpoint of the generator params
                          (``ocp.StandardCheckpointer().save(<dir>/params, params)``)

3. A ``train.py`` work directory (its ``checkpoints/best``, else ``checkpoints/last``), or
   an **orbax CheckpointManager root** of a training run::

     <root>/<step>/<item>/    numeric step folders, each holding PyTree items

   Steps are tried from the latest down; the first that holds generator params is used.
   Every PyTree item of a step is searched for the generator param tree: a dict with the
   keys ``band_split``, ``band_merge`` and ``block_0`` (the tree :func:`init_params`
   makes), at any depth, e.g. ``state["generator"]["params"]``. Optimizer state, which
   mirrors the params, is skipped (any path through ``opt_state``, ``mu`` or ``nu``); of
   several matches the shallowest wins, ties going to one whose last key is ``params``,
   then to the alphabetically first item and path. Only that subtree is read from disk.
   The config is the first of ``<root>/<step>/config.json``, the orbax JSON item
   ``<root>/<step>/config/metadata`` (``ocp.args.JsonSave``) and ``<root>/config.json``;
   it holds the ApolloConfig fields, at the top level or under ``"model"``.

A path pointing at one step folder, or at the ``params`` item itself (config beside it),
works too.

Chunked restoration (:class:`ChunkedRestorer`, :func:`restore_array`)
--------------------------------------------------------------------
Each channel is cut into chunks of a fixed ``chunk`` samples that start every
``chunk - overlap`` samples; the last chunk is moved back to end at the end of the input
(rounded up to the STFT hop; the < hop samples past the end are the input mirrored at its
end, as the STFT's own reflect padding would see them). Chunk
length and overlap are rounded to whole STFT hops so every chunk sees the same frame grid
as the whole file. Chunks of all channels go through the model in batches of
``batch_chunks`` (the last batch padded with silent chunks), so the model compiles once per
``(batch_chunks, chunk)`` whatever the input length. An input shorter than one chunk is
restored whole instead (padding it to a chunk would change its ending; this compiles once
per distinct short length).

Crossfade: where two chunks overlap, the outer quarter of the overlap on each side is
dropped (the samples nearest a chunk edge, where the network saw the padding of the chunk
instead of the real neighbours), and over the middle half the earlier chunk fades out with
``cos^2`` while the later one fades in with ``sin^2`` of ``pi/2 * (t + 0.5) / fade``; the
two weights sum to exactly 1, so a signal both chunks agree on passes unchanged. With
``overlap = 0`` chunks are butted together.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import pickle
import math
import os
import re
import shutil
import tempfile
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from apollo_jax.audio import AudioError, current_umask
from apollo_jax.config import ApolloConfig
from apollo_jax.interop import CheckpointFormatError, load_torch_generator
from apollo_jax.model import Apollo, init_params

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CHUNK_SECONDS", "DEFAULT_OVERLAP_SECONDS", "ChunkedRestorer", "load_generator",
    "restore_array", "save_generator", "select_device",
]

# At the paper config on CPU each second of mono audio in a chunk adds about 200 MB to the
# peak memory of the forward pass (1.5 GB for the whole process at 5 s, 2.1 GB at 8 s);
# 4 s keeps the process under 1.5 GB (bench/restore.py).
DEFAULT_CHUNK_SECONDS = 4.0
# Measured at the paper config (random weights, 8 s of music, 3 s chunks), chunked vs
# whole: overlap 0.1 s -> 44 dB SNR, 0.25 s -> 75 dB, 0.5 s -> 118 dB, 1 s -> 147 dB.
# 0.25 s is far below audibility and recomputes under 7% of the audio with 4 s chunks.
DEFAULT_OVERLAP_SECONDS = 0.25

_GENERATOR_KEYS = {"band_split", "band_merge", "block_0"}
_OPTIMIZER_KEYS = {"opt_state", "mu", "nu"}
_PARAMS_ITEM = "params"
_CONFIG_FILE = "config.json"


# ---------------------------------------------------------------------------------------
# Checkpoints

# What reading a file that is not a valid checkpoint can raise (torch_pickle, safetensors,
# orbax); the command-line tools report these as one line, never a traceback.
CHECKPOINT_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError, EOFError,
                     AttributeError, pickle.UnpicklingError)


def add_checkpoint_rate_flags(p: argparse.ArgumentParser) -> None:
  """``--sample-rate`` / ``--win-ms`` for :func:`load_generator` (state dicts lacking them)."""
  p.add_argument("--sample-rate", type=int, default=None,
                 help="sample rate of a checkpoint that does not record it (default: inferred "
                      "from its FFT size with the published 20 ms window)")
  p.add_argument("--win-ms", type=float, default=None,
                 help="STFT window in ms of a checkpoint that does not record it (default 20)")


def load_generator(checkpoint: str, sample_rate: int | None = None,
                   win_ms: float | None = None) -> tuple[ApolloConfig, dict]:
  """Loads generator ``(config, params)`` from any supported checkpoint (module docstring).

  Args:
    checkpoint: a published PyTorch file, a ``.safetensors`` state dict, an orbax params
      directory or the root of an orbax CheckpointManager.
    sample_rate: for state dicts that do not record it (default: inferred from the FFT
      size with the published 20 ms window, see ``interop.config_from_state_dict``). A
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
  cfg, params = _load_orbax_any(checkpoint)
  # Our folders always record the config: an explicit flag can only agree with it.
  for flag, value, recorded in (("--sample-rate", sample_rate, cfg.sample_rate),
                                ("--win-ms", win_ms, cfg.win_ms)):
    if value is not None and float(value) != float(recorded):
      raise CheckpointFormatError(
          f"{checkpoint} was trained with {flag[2:].replace('-', '_')}={recorded:g} (its "
          f"config.json), but {flag} {value:g} was given")
  return cfg, params


def _load_orbax_any(checkpoint: str) -> tuple[ApolloConfig, dict]:
  runs = os.path.join(checkpoint, "checkpoints")
  if os.path.isdir(runs):  # A train.py work directory: its best checkpoint, else the latest.
    for sub in ("best", "last"):
      if os.path.isdir(os.path.join(runs, sub)) and _step_dirs(os.path.join(runs, sub)):
        return _load_orbax(os.path.join(os.path.abspath(runs), sub))
  return _load_orbax(os.path.abspath(checkpoint))


def save_generator(directory: str, cfg: ApolloConfig, params: Mapping, overwrite: bool = False) -> None:
  """Writes an orbax params directory (``config.json`` + ``params/``) atomically.

  Everything is written to a temporary sibling folder first and renamed into place.
  """
  import orbax.checkpoint as ocp
  directory = os.path.abspath(directory)
  if os.path.exists(directory) and not overwrite:
    raise FileExistsError(f"{directory} already exists (pass overwrite=True to replace it)")
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(directory)}-", dir=parent)
  try:
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), dict(params))
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(os.path.join(tmp, _PARAMS_ITEM), params)
      ckptr.wait_until_finished()
    with open(os.path.join(tmp, _CONFIG_FILE), "w") as f:
      f.write(cfg.to_json())
    os.chmod(tmp, 0o777 & ~current_umask())  # not mkdtemp's 0700
    if os.path.exists(directory):
      old = tempfile.mkdtemp(prefix=f".old-{os.path.basename(directory)}-", dir=parent)
      os.replace(directory, os.path.join(old, "x"))
      os.replace(tmp, directory)
      shutil.rmtree(old)
    else:
      os.replace(tmp, directory)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _is_pytree_item(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "_METADATA"))


def _step_dirs(root: str) -> list[str]:
  """Folders that may hold items: ``root`` itself, else its numeric step folders, latest first."""
  if _is_pytree_item(root):  # the params item itself
    return [root]
  entries = os.listdir(root)
  if any(_is_pytree_item(os.path.join(root, e)) for e in entries):
    return [root]
  steps = [e for e in entries if re.fullmatch(r"\d+", e) and os.path.isdir(os.path.join(root, e))]
  return [os.path.join(root, e) for e in sorted(steps, key=int, reverse=True)]


def _generator_paths(tree: Any, prefix: tuple = ()) -> Iterator[tuple]:
  """Key paths of the dicts in ``tree`` that look like generator params (through dicts only)."""
  if isinstance(tree, Mapping):
    if _GENERATOR_KEYS <= set(tree):
      yield prefix
      return
    for k in sorted(tree, key=str):
      if str(k) not in _OPTIMIZER_KEYS:
        yield from _generator_paths(tree[k], prefix + (k,))


def _find_generator(step_dir: str) -> tuple[str, tuple, Any] | None:
  """``(item folder, key path, metadata subtree)`` of the generator params in a step."""
  import orbax.checkpoint as ocp
  items = [step_dir] if _is_pytree_item(step_dir) else sorted(
      os.path.join(step_dir, e) for e in os.listdir(step_dir)
      if _is_pytree_item(os.path.join(step_dir, e)))
  found = []
  for item in items:
    try:
      meta = ocp.PyTreeCheckpointer().metadata(item)
      tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta.tree
    except Exception as e:  # orbax raises many kinds (or returns None) for a damaged item
      raise _UnreadableStep(f"cannot read orbax checkpoint {item}: {_first_line(e)}") from None
    for path in _generator_paths(tree):
      sub = tree
      for k in path:
        sub = sub[k]
      found.append(((len(path), not (path and path[-1] == "params"), item, tuple(map(str, path))),
                    (item, path, sub)))
  if not found:
    return None
  return min(found, key=lambda f: f[0])[1]


def _read_config(step_dir: str) -> ApolloConfig:
  """The generator config for a step folder (see the module docstring for the places)."""
  parent = os.path.dirname(step_dir)
  grand = os.path.dirname(parent)
  places = [os.path.join(step_dir, _CONFIG_FILE), os.path.join(step_dir, "config", "metadata"),
            os.path.join(parent, _CONFIG_FILE)]
  if _is_pytree_item(step_dir):  # pointed at the params item: config sits beside it
    places.append(os.path.join(grand, _CONFIG_FILE))
  for place in places:
    if os.path.isfile(place):
      try:
        with open(place) as f:
          d = json.load(f)
        if isinstance(d, Mapping) and isinstance(d.get("model"), Mapping):
          d = d["model"]
        return ApolloConfig.from_dict(dict(d))
      except (ValueError, TypeError) as e:
        raise CheckpointFormatError(f"{place} is not an Apollo config: {e}") from None
  raise CheckpointFormatError(
      f"no generator config for {step_dir}: expected one of {', '.join(places)}")


def _load_orbax(root: str) -> tuple[ApolloConfig, dict]:
  steps = _step_dirs(root)
  if not steps:
    raise CheckpointFormatError(
        f"{root} is not a checkpoint directory: no orbax items (<dir>/params/_METADATA) and no "
        f"numeric step folders")
  unreadable: list[str] = []
  for step_dir in steps:
    try:
      loaded = _load_step(step_dir)
    except _UnreadableStep as e:
      if len(steps) == 1:
        raise CheckpointFormatError(str(e)) from None
      # As train.py does: a step cut short (a crash while saving) falls back to an older one.
      log.warning("%s; trying an older step", e)
      unreadable.append(f"{os.path.basename(step_dir)} ({e})")
      continue
    if loaded is not None:
      return loaded
  if unreadable:
    raise CheckpointFormatError(f"no readable step in {root}: {'; '.join(unreadable)}")
  raise CheckpointFormatError(
      f"no generator params (a tree with {sorted(_GENERATOR_KEYS)}) in any step of {root}")


def _load_step(step_dir: str) -> tuple[ApolloConfig, dict] | None:
  """The generator of one step folder; None when it holds none.

  Raises:
    _UnreadableStep: orbax cannot read the step (truncated or damaged files).
    CheckpointFormatError: a config or shapes that do not fit (not a damaged file).
  """
  import orbax.checkpoint as ocp
  found = _find_generator(step_dir)
  if found is None:
    return None
  item, path, sub = found
  cfg = _read_config(step_dir)
  expected = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
  _check_shapes(expected, sub, f"{item} {'/'.join(map(str, path))}", cfg)
  # Read only the generator subtree, as numpy float32.
  target = jax.tree.map(lambda a: np.zeros((), np.float32), expected)
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  for k in reversed(path):
    target, restore_args = {k: target}, {k: restore_args}
  try:
    restored = ocp.PyTreeCheckpointer().restore(
        item, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                          partial_restore=True))
    for k in path:
      restored = restored[k]
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), restored)
  except Exception as e:  # tensorstore/orbax errors of truncated array files
    raise _UnreadableStep(f"cannot read orbax checkpoint {item}: {_first_line(e)}") from None
  _check_shapes(expected, params, item, cfg)  # a damaged file may restore the wrong shapes
  return cfg, params


class _UnreadableStep(Exception):
  """One step folder of an orbax checkpoint cannot be read."""


def _first_line(e: BaseException) -> str:
  text = str(e).strip()
  return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _check_shapes(expected: Any, found: Any, where: str, cfg: ApolloConfig) -> None:
  flat_e = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)}
  flat_f = {jax.tree_util.keystr(k): tuple(getattr(v, "shape", ()))
            for k, v in jax.tree_util.tree_leaves_with_path(found)}
  missing, unexpected = sorted(set(flat_e) - set(flat_f)), sorted(set(flat_f) - set(flat_e))
  if missing or unexpected:
    raise CheckpointFormatError(
        f"generator params in {where} do not match the config: missing {missing[:3]}, "
        f"unexpected {unexpected[:3]}")
  bad = [f"{k} {flat_f[k]} != {s}" for k, s in flat_e.items() if tuple(flat_f[k]) != tuple(s)]
  if bad:
    raise CheckpointFormatError(
        f"generator param shapes in {where} are inconsistent with feature_dim="
        f"{cfg.feature_dim}, num_layers={cfg.num_layers}: " + "; ".join(bad[:3]))


# ---------------------------------------------------------------------------------------
# Devices and the compiled forward


def select_device(name: str = "auto") -> jax.Device:
  """``"auto"`` (JAX's default backend), ``"cpu"``, ``"gpu"`` or ``"tpu"`` -> a device."""
  if name == "auto":
    return jax.devices()[0]
  if name not in ("cpu", "gpu", "tpu"):
    raise ValueError(f"unknown device {name!r}; expected auto, cpu, gpu or tpu")
  try:
    return jax.devices(name)[0]
  except RuntimeError:
    raise ValueError(
        f"no {name} device is available to JAX (default backend here: "
        f"{jax.default_backend()}); use --device auto or cpu") from None


@functools.lru_cache(maxsize=16)
def _compiled_forward(cfg: ApolloConfig, shape: tuple[int, int, int], device: jax.Device):
  """The generator compiled ahead of time for inputs ``shape`` = (batch, channels, samples)
  on ``device``; cached, so each shape compiles once per process."""
  sharding = jax.sharding.SingleDeviceSharding(device)
  spec = lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)
  params = jax.eval_shape(lambda: init_params(cfg, jax.random.PRNGKey(0)))
  forward = jax.jit(lambda params, x: Apollo(cfg).apply({"params": params}, x))
  return forward.lower(jax.tree.map(lambda a: spec(a.shape), params), spec(shape)).compile()


# ---------------------------------------------------------------------------------------
# Chunked overlap-add


@functools.lru_cache(maxsize=16)
def _fade_in(length: int) -> np.ndarray:
  """``sin^2(pi/2 (t + 0.5) / length)``, t = 0..length-1; ``1 - fade_in`` is the fade-out."""
  return (np.sin(0.5 * np.pi * (np.arange(length) + 0.5) / length) ** 2).astype(np.float32)


class _OverlapAdd:
  """Joins restored chunks ``(channels, chunk)`` at increasing starts into one stream."""

  def __init__(self, chunk: int):
    self.chunk = chunk
    self.prev: tuple[int, np.ndarray] | None = None
    self.done = 0  # output samples already emitted

  def add(self, start: int, y: np.ndarray) -> np.ndarray | None:
    """Takes the chunk at ``start``; returns the output that is now final (or None)."""
    if self.prev is None:
      self.prev = (start, y)
      return None
    p, py = self.prev
    overlap = p + self.chunk - start
    # Drop the outer quarters of the overlap, fade over the middle half; never start before
    # what is already out (overlaps over half a chunk make consecutive zones meet).
    c0 = max(start + overlap // 4, self.done)
    c1 = max(c0, start + overlap - overlap // 4)
    w = _fade_in(c1 - c0) if c1 > c0 else np.zeros(0, np.float32)
    mixed = py[:, c0 - p:c1 - p] * (1 - w) + y[:, c0 - start:c1 - start] * w
    out = np.concatenate([py[:, self.done - p:c0 - p], mixed], axis=1)
    self.prev, self.done = (start, y), c1
    return out

  def finish(self, total: int) -> np.ndarray:
    p, py = self.prev
    return py[:, self.done - p:total - p]


class ChunkedRestorer:
  """Restores audio chunk by chunk with a model compiled once (see the module docstring).

  Args:
    cfg, params: the generator (e.g. from :func:`load_generator`).
    chunk_seconds: chunk length; None processes each input whole (one compile per length).
    overlap_seconds: overlap of consecutive chunks, less than ``chunk_seconds``.
    batch_chunks: chunks per model call (mono chunks of any channel).
    device: where the model runs (default: JAX's default device).
  """

  def __init__(self, cfg: ApolloConfig, params: Mapping,
               chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
               overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: int = 1,
               device: jax.Device | None = None):
    self.cfg = cfg
    self.device = device or jax.devices()[0]
    as_f32 = lambda a: a if getattr(a, "dtype", None) == np.float32 else np.asarray(a, np.float32)
    self.params = jax.device_put(jax.tree.map(as_f32, dict(params)), self.device)
    self.batch = int(batch_chunks)
    if self.batch < 1:
      raise ValueError(f"batch_chunks must be >= 1, got {batch_chunks}")
    self.chunk = self.overlap = None
    if chunk_seconds is not None:
      hop, rate = cfg.hop, cfg.sample_rate
      if not chunk_seconds > 0 or not overlap_seconds >= 0:
        raise ValueError(f"need chunk_seconds > 0 and overlap_seconds >= 0, got "
                         f"{chunk_seconds} and {overlap_seconds}")
      self.chunk = max(1, round(chunk_seconds * rate / hop)) * hop
      self.overlap = round(overlap_seconds * rate / hop) * hop
      if self.chunk < cfg.n_fft or self.overlap >= self.chunk:
        raise ValueError(
            f"chunk_seconds={chunk_seconds} must be at least one STFT window "
            f"({cfg.n_fft / rate:.3f} s) and longer than overlap_seconds={overlap_seconds}")
    self.compile_seconds = 0.0  # time spent compiling so far (each shape once per process)

  def _model(self, shape: tuple[int, int, int]):
    t = time.perf_counter()
    fn = _compiled_forward(self.cfg, shape, self.device)
    self.compile_seconds += time.perf_counter() - t
    return fn

  @property
  def step(self) -> int:
    """Samples between the starts of consecutive chunks."""
    return self.chunk - self.overlap

  def compile(self) -> float:
    """Compiles the chunk forward now instead of on first use; returns the seconds taken."""
    t = time.perf_counter()
    if self.chunk is not None:
      self._model((self.batch, 1, self.chunk))
    return time.perf_counter() - t

  def num_chunks(self, samples: int) -> int:
    """Chunks (per channel) an input of ``samples`` samples is cut into (1 when whole)."""
    if self.chunk is None or samples <= self.chunk:
      return 1
    regular = (samples - self.chunk) // self.step + 1
    return regular + ((regular - 1) * self.step + self.chunk < samples)

  def _check_length(self, total: int) -> None:
    if total < self.cfg.n_fft:
      raise AudioError(
          f"input is {total} samples at {self.cfg.sample_rate} Hz, shorter than one STFT "
          f"window ({self.cfg.n_fft} samples = {self.cfg.win_ms:g} ms)")

  def restore(self, blocks: Iterable[np.ndarray],
              progress: Callable[[int], Any] | None = None) -> Iterator[np.ndarray]:
    """Restores a stream of ``(channels, n)`` float32 blocks at the model rate.

    Yields ``(channels, m)`` blocks that concatenate to the restored audio (same length as
    the input). Memory stays bounded by a few chunks whatever the input length (unless
    ``chunk_seconds`` is None). ``progress(n)`` is called as ``n`` more chunks finish.

    Raises:
      AudioError: no samples, or fewer than one STFT window.
    """
    if self.chunk is None:
      yield self._restore_whole(blocks)
      if progress:
        progress(1)
      return
    L, S, hop = self.chunk, self.step, self.cfg.hop
    ola = _OverlapAdd(L)
    buf, buf_start, total = None, 0, 0
    next_start, last_start = 0, None
    queue: list[tuple[int, int, np.ndarray]] = []  # (chunk index, channel, samples (L,))
    starts: list[int] = []
    results: dict[int, list] = {}
    emitted = 0  # chunks handed to the overlap-add

    def form(start: int) -> None:
      seg = buf[:, start - buf_start:start - buf_start + L]
      if seg.shape[1] < L:  # final chunk, < hop short: mirror the end like the STFT does
        seg = np.pad(seg, ((0, 0), (0, L - seg.shape[1])), mode="reflect")
      k = len(starts)
      starts.append(start)
      results[k] = [None] * seg.shape[0]
      queue.extend((k, c, seg[c]) for c in range(seg.shape[0]))

    def run(flush: bool) -> Iterator[np.ndarray]:
      nonlocal emitted
      while len(queue) >= self.batch or (flush and queue):
        items, queue[:self.batch] = queue[:self.batch], []
        x = np.zeros((self.batch, 1, L), np.float32)
        for i, (_, _, seg) in enumerate(items):
          x[i, 0] = seg
        model = self._model((self.batch, 1, L))
        y = np.asarray(model(self.params, jax.device_put(x, self.device)))
        for i, (k, c, _) in enumerate(items):
          results[k][c] = y[i, 0]
        while emitted in results and all(r is not None for r in results[emitted]):
          out = ola.add(starts[emitted], np.stack(results.pop(emitted)))
          emitted += 1
          if progress:
            progress(1)
          if out is not None and out.shape[1]:
            yield out

    for block in blocks:
      block = np.asarray(block, np.float32)
      if block.ndim != 2:
        raise ValueError(f"expected (channels, samples) blocks, got shape {block.shape}")
      if buf is None:
        buf = np.zeros((block.shape[0], 0), np.float32)
      elif block.shape[0] != buf.shape[0]:
        raise ValueError(f"block has {block.shape[0]} channels, earlier ones {buf.shape[0]}")
      buf = np.concatenate([buf, block], axis=1)
      total += block.shape[1]
      while buf_start + buf.shape[1] >= next_start + L:
        form(next_start)
        last_start, next_start = next_start, next_start + S
        # The final chunk starts after last_start: older samples are no longer needed.
        buf, buf_start = buf[:, last_start - buf_start:], last_start
        yield from run(flush=False)
    if total == 0:
      raise AudioError("input contains no audio samples")
    self._check_length(total)
    if last_start is None:  # shorter than one chunk: exact, at the cost of a compile per length
      yield self._restore_whole([buf])
      if progress:
        progress(1)
      return
    if last_start + L < total:
      form(math.ceil((total - L) / hop) * hop)
    yield from run(flush=True)
    out = ola.finish(total)
    if out.shape[1]:
      yield out

  def _restore_whole(self, blocks: Iterable[np.ndarray]) -> np.ndarray:
    blocks = [np.asarray(b, np.float32) for b in blocks]
    if not blocks or not sum(b.shape[1] for b in blocks):
      raise AudioError("input contains no audio samples")
    audio = np.concatenate(blocks, axis=1)
    self._check_length(audio.shape[1])
    model = self._model((1,) + audio.shape)
    return np.asarray(model(self.params, jax.device_put(audio[None], self.device))[0])

  def restore_array(self, audio: np.ndarray,
                    progress: Callable[[int], Any] | None = None) -> np.ndarray:
    """``(channels, samples)`` at the model rate -> restored ``(channels, samples)``."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 2:
      raise ValueError(f"expected audio of shape (channels, samples), got {audio.shape}")
    return np.concatenate(list(self.restore([audio], progress)), axis=1)


def restore_array(params: Mapping, cfg: ApolloConfig, audio: np.ndarray,
                  chunk_seconds: float | None = DEFAULT_CHUNK_SECONDS,
                  overlap_seconds: float = DEFAULT_OVERLAP_SECONDS, batch_chunks: int = 1,
                  device: jax.Device | None = None,
                  progress: Callable[[int], Any] | None = None) -> np.ndarray:
  """Restores ``audio`` float32 ``(channels, samples)`` at ``cfg.sample_rate``.

  Chunked overlap-add as in the module docstring (``chunk_seconds=None``: the whole input
  in one forward pass). The compiled model is cached per (config, chunk shape, device), so
  calling this for many files compiles once. Returns ``(channels, samples)`` float32.
  """
  restorer = ChunkedRestorer(cfg, params, chunk_seconds, overlap_seconds, batch_chunks, device)
  return restorer.restore_array(audio, progress)
