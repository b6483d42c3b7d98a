"""Training checkpoints: orbax ``CheckpointManager`` wiring for the whole run state.

The writer of a run's checkpoints; the readers are :meth:`Checkpoints.restore_latest`
(resuming) and :func:`apollo_jax.checkpoints.load_generator` (restore, eval, init_from),
which share the folder and item names of :mod:`apollo_jax.checkpoints.orbax`.

Layout under ``<workdir>/checkpoints``::

  last/<step>/{state, data, meta}   the most recent ``keep`` checkpoints (resume from here)
  best/<step>/{state, meta}         the best one by validation SI-SDR
  {last,best}/config.json           the generator's ApolloConfig, so either folder can be
                                    given to ``--checkpoint`` of restore / eval

``state`` is the :class:`~apollo_jax.training.TrainState` (G and D params, the
discriminator's spectral-norm vectors, both optimiser states, step, skip counters; runs
saved with the former unused ``rng`` field resume too),
``data`` the grain iterator position of every process, and ``meta`` a JSON dict (configs,
early-stopping bookkeeping). A checkpoint that fails to restore (e.g. truncated by a crash
of the machine) is skipped with a warning and the previous one is used.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import dataclasses

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from apollo_jax.checkpoints.errors import CheckpointFormatError
from apollo_jax.checkpoints.orbax import (BEST, CONFIG_FILE, DATA_ITEM, LAST, META_ITEM,
                                          RUN_CHECKPOINTS, STATE_ITEM)
from apollo_jax.training.state import LegacyTrainState, TrainState

log = logging.getLogger(__name__)


class ResumeError(CheckpointFormatError):
  """The run has checkpoints but none can be read: resuming or starting over would both be
  wrong without the user's say (the message names what to delete). A CheckpointFormatError,
  the one error of an unreadable checkpoint."""


class Checkpoints:
  """Saves and restores the run state of one training work directory."""

  def __init__(self, workdir: str, keep: int, gen_config_json: str):
    self.workdir = os.path.abspath(workdir)
    self.root = root = os.path.join(self.workdir, RUN_CHECKPOINTS)
    self.last = ocp.CheckpointManager(
        os.path.join(root, LAST), item_names=(STATE_ITEM, DATA_ITEM, META_ITEM),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    self.best = ocp.CheckpointManager(
        os.path.join(root, BEST), item_names=(STATE_ITEM, META_ITEM),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
    if jax.process_index() == 0:
      for folder in (LAST, BEST):
        with open(os.path.join(root, folder, CONFIG_FILE), "w") as f:
          f.write(gen_config_json)

  def save(self, step: int, state: Any, data_iterator: Any, meta: dict[str, Any],
           best: bool = False) -> None:
    """Writes ``state`` (+ data position and ``meta``); also as the best one if ``best``."""
    self.last.save(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardSave(state),
        DATA_ITEM: grain.checkpoint.CheckpointSave(data_iterator),
        META_ITEM: ocp.args.JsonSave(meta)}), force=True)
    if best:
      self.best.save(step, args=ocp.args.Composite(**{
          STATE_ITEM: ocp.args.StandardSave(state), META_ITEM: ocp.args.JsonSave(meta)}),
          force=True)

  def restore_latest(self, abstract_state: Any, data_iterator: Any
                     ) -> tuple[Any, dict[str, Any]] | None:
    """Restores the newest readable checkpoint into ``data_iterator`` and a new state.

    Returns ``(state, meta)``, or None when there is nothing to resume from.

    Raises:
      ResumeError: there are checkpoints, but none of them can be read. Starting over would
        mix a new run into the old one's logs and collide with its step folders.
    """
    self.last.wait_until_finished()
    unreadable, reasons = [], []
    for step in sorted(self.last.all_steps(), reverse=True):
      try:
        restored = self._restore(step, abstract_state, data_iterator)
      except Exception as e:  # Any unreadable checkpoint: fall back to an older one.
        log.warning("checkpoint at step %d is unreadable (%s: %s); trying an older one",
                    step, type(e).__name__, str(e).splitlines()[0][:200])
        unreadable.append(step)
        reasons.append(f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}")
        continue
      for bad in unreadable:  # Those steps will be trained and saved again.
        self.last.delete(bad)
      return restored[STATE_ITEM], dict(restored[META_ITEM])
    if unreadable:
      folder = self.root
      raise ResumeError(
          f"no checkpoint of this run can be read: steps {', '.join(map(str, unreadable))} in "
          f"{os.path.join(folder, LAST)} are all unreadable (newest: {reasons[0]}). Nothing "
          f"was trained. To start the run over, delete {folder}, "
          f"{os.path.join(self.workdir, 'metrics.jsonl')} and "
          f"{os.path.join(self.workdir, 'tensorboard')} (or use a new --workdir)")
    return None

  def _restore(self, step: int, abstract_state: Any, data_iterator: Any) -> dict[str, Any]:
    """One step's items; a TrainState saved with the old unused ``rng`` (before issue 12)
    is read as :class:`LegacyTrainState` and returned without it."""
    def read(abstract):
      return self.last.restore(step, args=ocp.args.Composite(**{
          STATE_ITEM: ocp.args.StandardRestore(abstract),
          DATA_ITEM: grain.checkpoint.CheckpointRestore(data_iterator),
          META_ITEM: ocp.args.JsonRestore()}))
    try:
      return read(abstract_state)
    except ValueError as e:
      if not (isinstance(abstract_state, TrainState) and "rng" in str(e)):
        raise
    like = abstract_state.step  # a replicated scalar: the key gets its sharding
    rng = jax.ShapeDtypeStruct((2,), np.uint32, sharding=getattr(like, "sharding", None))
    fields = {f.name: getattr(abstract_state, f.name) for f in dataclasses.fields(TrainState)}
    restored = read(LegacyTrainState(**fields, rng=rng))
    old = restored[STATE_ITEM]
    state = TrainState(**{name: getattr(old, name) for name in fields})
    return {STATE_ITEM: state, META_ITEM: restored[META_ITEM]}

  def wait(self) -> None:
    self.last.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.last.close()
    self.best.close()


def abstract(tree: Any) -> Any:
  """Shapes, dtypes and shardings of ``tree`` for a restore without a second allocation."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
