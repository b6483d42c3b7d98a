"""The training loop: data -> sharded GAN step -> logs, validation, checkpoints.

``train(config, workdir)`` runs (or resumes) one training run described by a config from
``configs/apollo.py``. Everything it writes goes under ``workdir``:

  config.json         the full config of the run
  checkpoints/        see :mod:`apollo_jax.training.checkpoint`
  metrics.jsonl       one row per logged step / validation
  tensorboard/        tensorboardX events (scalars, audio, spectrograms, config)

Launching the same command again resumes from the newest readable checkpoint, with the
data pipeline at the same position, so the run continues exactly as if uninterrupted.
SIGTERM / SIGINT finish the current step, save a checkpoint and return.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from apollo_jax.config import ApolloConfig
from apollo_jax.data import heap, pipeline
from apollo_jax.training.checkpoint import Checkpoints, abstract
from apollo_jax.training.config import TrainConfig
from apollo_jax.training.runlog import RunLogger
from apollo_jax.training.state import create_train_state
from apollo_jax.training.step import make_mesh, make_train_step, shard_batch
from apollo_jax.training.validate import check_config
from apollo_jax.training.validation import Validator

log = logging.getLogger(__name__)


def model_config(config: ml_collections.ConfigDict) -> ApolloConfig:
  return ApolloConfig.from_dict(config.model.to_dict())


def train_config(config: ml_collections.ConfigDict) -> TrainConfig:
  return TrainConfig.from_dict(config.train.to_dict())


class _StopFlag:
  """Set by SIGTERM/SIGINT: the loop saves after the current step and returns."""

  def __init__(self):
    self.stop = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.stop:  # A second signal: give up at once.
      signal.signal(signum, self._previous[signum])
      raise KeyboardInterrupt
    log.warning("signal %d: finishing the current step, then saving", signum)
    self.stop = True

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _init_generator(config, gen_cfg: ApolloConfig):
  """Generator params to start from (``config.init_from``), or None for a random init."""
  if not config.init_from:
    return None
  from apollo_jax.checkpoints import load_generator
  # The config's rate and window stand in for --sample-rate / --win-ms: a bare state dict
  # is read at them, and a file that records others is refused.
  cfg, params = load_generator(config.init_from, gen_cfg.sample_rate, gen_cfg.win_ms)
  arch = lambda c: dataclasses.replace(c, chunk_rows=0, remat=False, compute_dtype="float32",
                                       residual=False)
  if arch(cfg) != arch(gen_cfg):
    raise ValueError(f"init_from={config.init_from} holds a generator with {cfg}, but the "
                     f"config asks for {gen_cfg}; set --config.model fields to match")
  return params


def _init_discriminator(config, train_cfg: TrainConfig):
  """The discriminator of an ``init_from`` training file (Lightning ``discriminator.``), or
  ``(None, None)``, so fine-tuning starts from a trained D when the file has one."""
  from apollo_jax.checkpoints import published
  if not config.init_from or not published.has_torch_discriminator(config.init_from):
    return None, None
  d = published.load_torch_discriminator(config.init_from, len(train_cfg.windows), train_cfg.channels,
                                        train_cfg.d_hidden)
  log.info("init_from: discriminator loaded from %s", config.init_from)
  return d["params"], d["spectral"]


class StepRate:
  """Step time from the moments steps are seen to complete, not dispatched.

  Dispatch is asynchronous, so the host reaches a step long before the device finishes it;
  the loop waits for each step's metrics one step later and calls :meth:`done` then. The
  interval after a pause (the first step, which waits for compilation, and anything else
  that is not training: validation, checkpoint writes) is left out of the rates.
  """

  def __init__(self):
    self.last = None  # when the previous step completed; None after a pause
    self.steps, self.seconds, self.data_wait = 0, 0.0, 0.0

  def pause(self) -> None:
    self.last = None

  def waited_for_data(self, seconds: float) -> None:
    if self.last is not None:
      self.data_wait += seconds

  def done(self, now: float) -> None:
    if self.last is not None:
      self.steps += 1
      self.seconds += now - self.last
    self.last = now

  def summary(self, audio_seconds_per_step: float) -> dict[str, float]:
    """``time/step_s``, ``time/audio_s_per_s``, ``time/data_wait_fraction`` since the last
    summary ({} when no whole step interval was seen); starts a new interval."""
    if not self.steps or self.seconds <= 0:
      return {}
    out = {"time/step_s": self.seconds / self.steps,
           "time/audio_s_per_s": audio_seconds_per_step * self.steps / self.seconds,
           "time/data_wait_fraction": min(1.0, self.data_wait / self.seconds)}
    self.steps, self.seconds, self.data_wait = 0, 0.0, 0.0
    return out


def _mean_metrics(history: list[dict[str, Any]]) -> dict[str, float]:
  host = jax.device_get(history)
  return {k: float(np.mean([h[k] for h in host])) for k in host[0]}


def train(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains (or resumes) the run in ``workdir``; returns the final summary.

  Raises:
    ConfigError: a config field training cannot use (checked before anything is built).
    ResumeError: the run has checkpoints, none of them readable.
  """
  check_config(config)
  gen_cfg, train_cfg = model_config(config), train_config(config)
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_main:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1, sort_keys=True))

  mesh = make_mesh()
  if config.global_batch_size % mesh.size:
    raise ValueError(f"global_batch_size={config.global_batch_size} is not divisible by the "
                     f"{mesh.size} devices")
  logger = RunLogger(workdir, enabled=is_main)
  data_iter = pipeline.make_train_iterator(config.data, config.seed, config.global_batch_size)
  disc_params, disc_spectral = _init_discriminator(config, train_cfg)
  state = create_train_state(gen_cfg, train_cfg, jax.random.PRNGKey(config.seed),
                             gen_params=_init_generator(config, gen_cfg), disc_params=disc_params,
                             disc_spectral=disc_spectral, mesh=mesh)
  checkpoints = Checkpoints(workdir, config.keep_checkpoints, gen_cfg.to_json())
  meta = {"best_si_sdr": -math.inf, "bad_validations": 0, "best_step": -1}
  resumed = checkpoints.restore_latest(abstract(state), data_iter)
  if resumed is not None:
    state, meta = resumed
    logger.truncate_after(int(state.step))
    log.info("resumed from step %d", int(state.step))
  else:
    logger.truncate_after(0)  # A fresh start: rows of an earlier attempt would repeat steps.
    logger.text("config", "```\n" + config.to_json_best_effort(indent=1) + "\n```")

  step_fn = make_train_step(gen_cfg, train_cfg, mesh)
  validator = Validator(config, gen_cfg) if config.val_every else None
  seconds_per_batch = config.global_batch_size * config.data.segment_seconds
  start_step = int(state.step)
  history: list[dict[str, Any]] = []
  stopped_early = False
  last_saved = start_step

  def save(step: int, best: bool = False) -> None:
    nonlocal last_saved
    checkpoints.save(step, state, data_iter, meta, best=best)
    last_saved = step

  with _StopFlag() as flag, tqdm.tqdm(total=config.num_steps, initial=start_step,
                                      disable=not is_main, unit="step", dynamic_ncols=True) as bar:
    step = start_step
    rate, compile_s = StepRate(), None
    in_flight = None  # metrics of the newest dispatched step, not yet waited for

    def settle() -> None:
      """Waits for the step in flight; the bar and the rates count completed steps."""
      nonlocal in_flight
      if in_flight is not None:
        jax.block_until_ready(in_flight)
        rate.done(time.perf_counter())
        bar.update(1)
        in_flight = None

    while step < config.num_steps and not flag.stop:
      t = time.perf_counter()
      batch = next(data_iter)
      rate.waited_for_data(time.perf_counter() - t)
      inputs = shard_batch({k: batch[k] for k in ("target", "degraded")}, mesh)
      if compile_s is None:  # Compiled (or loaded from the cache) for the first batch's shapes.
        t = time.perf_counter()
        step_fn = step_fn.lower(state, inputs).compile()
        compile_s = time.perf_counter() - t
        # Before the first step: the compiler's freed memory would stay under the step's.
        heap.release_freed_memory()
        log.info("train step compiled in %.1f s", compile_s)
      state, metrics = step_fn(state, inputs)
      history.append(metrics)
      step += 1
      # One step behind: wait for the previous step while this one runs, so the host
      # prepares the next batch during this step but never runs ahead of the device.
      settle()
      in_flight = metrics
      if step % config.log_every == 0 or step == config.num_steps:
        settle()
        scalars = _mean_metrics(history) | rate.summary(seconds_per_batch)
        if step == start_step + len(history):  # The first log of this process.
          scalars["time/compile_s"] = compile_s
        logger.scalars(step, scalars)
        bar.set_postfix(loss_g=f"{scalars['loss_g']:.3f}", loss_d=f"{scalars['loss_d']:.3f}",
                        **({"audio_s_per_s": f"{scalars['time/audio_s_per_s']:.2f}"}
                           if "time/audio_s_per_s" in scalars else {}))
        history = []

      best = False
      validated = validator is not None and step % config.val_every == 0
      if validated:
        settle()
        scores = validator(state.gen_params, step, logger)
        logger.scalars(step, scores)
        if scores["val/si_sdr"] > meta["best_si_sdr"]:
          meta.update(best_si_sdr=scores["val/si_sdr"], best_step=step, bad_validations=0)
          best = True
        else:
          meta["bad_validations"] += 1
        tqdm.tqdm.write(f"step {step}: " + ", ".join(f"{k[4:]} {v:.3f}" for k, v in scores.items()))
        stopped_early = meta["bad_validations"] >= config.early_stop_patience
      if validated or step % config.checkpoint_every == 0 or flag.stop or stopped_early:
        settle()
        save(step, best)
        rate.pause()  # Time training steps only.
      if stopped_early:
        tqdm.tqdm.write(f"early stop: no better validation SI-SDR for "
                        f"{config.early_stop_patience} validations")
        break
    settle()
    if step > last_saved:
      save(step)
  checkpoints.wait()
  checkpoints.close()
  logger.close()
  if hasattr(data_iter, "close"):
    data_iter.close()
  return {"step": step, "interrupted": flag.stop, "stopped_early": stopped_early, **meta}
