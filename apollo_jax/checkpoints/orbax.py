"""Orbax generator checkpoints: the params folders we write and training runs' steps.

Layouts read (:func:`load_orbax_generator`; :func:`apollo_jax.checkpoints.load_generator`
dispatches here for folders):

1. An **orbax params directory**, as written by :func:`save_generator` and
   ``python -m apollo_jax.interop convert``::

     <dir>/config.json    ApolloConfig.to_json()
     <dir>/params/        orbax PyTree checkpoint of the generator params
                          (``ocp.StandardCheckpointer().save(<dir>/params, params)``)

2. A ``train.py`` work directory (its ``checkpoints/best``, else ``checkpoints/last``), or
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
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from typing import Any, Iterator, Mapping

import jax
import numpy as np

from apollo_jax.audio import current_umask
from apollo_jax.checkpoints.errors import CheckpointFormatError
from apollo_jax.config import ApolloConfig
from apollo_jax.model import init_params

log = logging.getLogger(__name__)

_GENERATOR_KEYS = {"band_split", "band_merge", "block_0"}
_OPTIMIZER_KEYS = {"opt_state", "mu", "nu"}
# Names shared by the writers (save_generator, apollo_jax.training.checkpoint) and the
# readers below, so a training run's folders are read where they are written.
PARAMS_ITEM = "params"          # <dir>/params: the generator params of a params folder
CONFIG_FILE = "config.json"     # the generator's ApolloConfig beside the params / steps
RUN_CHECKPOINTS = "checkpoints"  # <workdir>/checkpoints of a train.py run
LAST, BEST = "last", "best"      # its CheckpointManager roots: the newest steps, the best one
STATE_ITEM, DATA_ITEM, META_ITEM = "state", "data", "meta"  # the items of a training step


def load_orbax_generator(checkpoint: str) -> tuple[ApolloConfig, dict]:
  """Generator ``(config, params)`` from any orbax layout in the module docstring."""
  runs = os.path.join(checkpoint, RUN_CHECKPOINTS)
  if os.path.isdir(runs):  # A train.py work directory: its best checkpoint, else the latest.
    for sub in (BEST, LAST):
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
      ckptr.save(os.path.join(tmp, PARAMS_ITEM), params)
      ckptr.wait_until_finished()
    with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
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
  places = [os.path.join(step_dir, CONFIG_FILE), os.path.join(step_dir, "config", "metadata"),
            os.path.join(parent, CONFIG_FILE)]
  if _is_pytree_item(step_dir):  # pointed at the params item: config sits beside it
    places.append(os.path.join(grand, CONFIG_FILE))
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
