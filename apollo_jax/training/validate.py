"""Start-up checks of a whole training config, so a bad field fails at once, by name.

Without them a zero ``log_every`` ended in ZeroDivisionError after minutes of compiling, and
a negative segment length in a grain/numpy message that named no field.
"""

from __future__ import annotations

import numbers
from typing import Any

from apollo_jax import audio
from apollo_jax.data import codecs
from apollo_jax.config import ApolloConfig
from apollo_jax.training.config import TrainConfig


class ConfigError(ValueError):
  """A config field has a value training cannot use; the message names the field."""


def _int(c, name: str, low: int, where: str, high: int | None = None) -> None:
  v = c[name]
  if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low or (
      high is not None and v > high):
    bound = f">= {low}" if high is None else f"in {low}..{high}"
    raise ConfigError(f"{where}.{name} must be an integer {bound}, got {v!r}")


def _num(c, name: str, where: str, low: float = 0.0, high: float | None = None,
         open_low: bool = True) -> None:
  v = c[name]
  ok = (not isinstance(v, bool) and isinstance(v, numbers.Real) and v == v
        and (v > low if open_low else v >= low) and (high is None or v <= high))
  if not ok:
    bound = (">" if open_low else ">=") + f" {low:g}" + ("" if high is None else f" and <= {high:g}")
    raise ConfigError(f"{where}.{name} must be a number {bound}, got {v!r}")


def _check_top(config) -> None:
  for name, low in (("global_batch_size", 1), ("num_steps", 1), ("log_every", 1),
                    ("val_every", 0), ("val_batch_size", 1), ("val_visqol_items", 0),
                    ("val_audio_items", 0), ("early_stop_patience", 1),
                    ("checkpoint_every", 1), ("keep_checkpoints", 1), ("seed", -(1 << 63))):
    _int(config, name, low, "config")
  if not isinstance(config.init_from, str):
    raise ConfigError(f"config.init_from must be a path or '', got {config.init_from!r}")


def _check_model(config) -> ApolloConfig:
  try:
    return ApolloConfig.from_dict(config.model.to_dict())
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.model: {e}") from None


def _check_train(config, model: ApolloConfig) -> None:
  t = config.train
  try:
    TrainConfig.from_dict(t.to_dict())
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.train: {e}") from None
  for name in ("g_lr", "d_lr", "adam_eps", "clip_norm", "lr_decay"):
    _num(t, name, "config.train")
  for name in ("g_weight_decay", "d_weight_decay", "rec_weight", "adv_weight", "fm_weight",
               "log_mag_weight"):
    _num(t, name, "config.train", open_low=False)
  for name in ("g_betas", "d_betas"):
    if not all(isinstance(b, numbers.Real) and 0 <= b < 1 for b in t[name]):
      raise ConfigError(f"config.train.{name} must be two numbers in [0, 1), got {tuple(t[name])}")
  windows = tuple(t.windows)
  if not windows or not all(isinstance(w, numbers.Integral) and w >= 4 for w in windows):
    raise ConfigError(f"config.train.windows must be STFT sizes >= 4, got {windows}")
  _int(t, "channels", 1, "config.train", 2)
  _int(t, "d_hidden", 1, "config.train")
  _int(t, "freeze_blocks", 0, "config.train", model.num_layers)


def _check_data(d) -> None:
  from apollo_jax.data.sources import LAYOUTS
  if d.layout not in LAYOUTS:
    raise ConfigError(f"config.data.layout must be one of {LAYOUTS}, got {d.layout!r}")
  for name in ("train_dirs", "val_dirs"):
    if isinstance(d[name], str) or not all(isinstance(p, str) and p for p in d[name]):
      raise ConfigError(f"config.data.{name} must be a tuple of folders, got {d[name]!r}")
  _int(d, "sample_rate", audio.MIN_SAMPLE_RATE, "config.data", audio.MAX_SAMPLE_RATE)
  _int(d, "channels", 1, "config.data", 2)
  for name in ("segment_seconds", "val_seconds", "demo_seconds"):
    _num(d, name, "config.data")
  for name in ("max_stems", "max_crop_tries", "val_items", "demo_tracks", "demo_val_tracks",
               "read_threads", "read_buffer", "worker_buffer"):
    _int(d, name, 1, "config.data")
  for name in ("num_workers", "demo_seed", "val_seed"):
    _int(d, name, 0, "config.data")
  _int(d, "mp3_quality", 0, "config.data", 9)
  if d.demo_source not in ("auto", "soundfont", "synth"):  # apollo_jax.data.demo.SOURCES
    raise ConfigError(f"config.data.demo_source must be auto, soundfont or synth, got "
                      f"{d.demo_source!r}")
  for name in ("p_mixture", "activity_min_fraction", "p_band_limit"):
    _num(d, name, "config.data", 0.0, 1.0, open_low=False)
  _num(d, "activity_threshold_db", "config.data", float("-inf"), 0.0)
  gain = tuple(d.gain_db)
  if len(gain) != 2 or not all(isinstance(g, numbers.Real) for g in gain) or gain[0] > gain[1]:
    raise ConfigError(f"config.data.gain_db must be (low, high) in dB, got {gain}")
  limits = tuple(d.band_limit_hz)
  if (len(limits) != 2 or not all(isinstance(f, numbers.Real) for f in limits)
      or not 0 < limits[0] <= limits[1] <= d.sample_rate / 2):
    raise ConfigError(f"config.data.band_limit_hz must be (low, high) in Hz within "
                      f"(0, {d.sample_rate / 2:g}], got {limits}")
  if not d.codecs or any(c not in codecs.CODECS for c in d.codecs):
    raise ConfigError(f"config.data.codecs must name some of {codecs.CODECS}, got {tuple(d.codecs)}")
  if not d.bitrates:
    raise ConfigError("config.data.bitrates must list at least one bitrate")
  for c in d.codecs:
    for b in d.bitrates:
      try:
        codecs.check_bitrate(c, b)
      except ValueError as e:
        raise ConfigError(f"config.data.bitrates: {e}") from None


# Fields that two parts of the config hold and that must be equal: (owner, derived). The
# owner is where the value is declared; configs/apollo.py copies it into the other part.
SHARED_FIELDS = (("model.sample_rate", "data.sample_rate"), ("data.channels", "train.channels"))


def _field(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def _check_agreement(config) -> None:
  """Model, data and train must describe the same audio (rate, channels)."""
  for owner, derived in SHARED_FIELDS:
    a, b = _field(config, owner), _field(config, derived)
    if a != b:
      raise ConfigError(
          f"config.{owner}={a!r} and config.{derived}={b!r} disagree: both describe the "
          f"training audio and must be equal (configs/apollo.py derives {derived} from "
          f"{owner}); set both, e.g. --config.{owner}={a!r} --config.{derived}={a!r}")


def check_config(config: Any) -> None:
  """Raises ConfigError naming the first field of ``config`` training cannot use, then
  the first pair of fields that model, data and train hold twice and that disagree.

  ``config`` is a training ConfigDict as ``configs/apollo.py`` builds it.
  """
  _check_top(config)
  model = _check_model(config)
  _check_train(config, model)
  _check_data(config.data)
  _check_agreement(config)
