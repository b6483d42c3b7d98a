"""Validation during training: the generator scored on the fixed validation pairs.

SI-SDR (the selection metric), LSD and optionally ViSQOL, with their gains over the codec
input; the first items are logged as audio and spectrograms. Moved out of
:mod:`apollo_jax.training.loop` with its plotting.
"""

from __future__ import annotations

import jax
import numpy as np

from apollo_jax.config import ApolloConfig
from apollo_jax.data import validation as val_data
from apollo_jax.evaluation import metrics as quality
from apollo_jax.model import jit_forward
from apollo_jax.training.runlog import RunLogger


class Validator:
  """Scores the generator on the fixed validation pairs (SI-SDR is the selection metric).

  Runs on this process's first device with a local copy of the parameters, so every
  process can compute it independently (only process 0 logs).
  """

  def __init__(self, config, gen_cfg: ApolloConfig):
    self.dataset = val_data.ValidationSet(val_data.ensure_validation_set(config.data))
    self.items = [self.dataset[i] for i in range(len(self.dataset))]
    self.sample_rate = self.dataset.sample_rate
    self.visqol_items = int(config.val_visqol_items)
    self.audio_items = int(config.val_audio_items)
    device = jax.local_devices()[0]
    self._device = device
    self._forward = jit_forward(gen_cfg)
    # The degraded inputs' scores are fixed: compute them once.
    self.input_scores = [self._score(it["target"], it["degraded"], i) for i, it in enumerate(self.items)]

  def _score(self, target, estimate, index) -> dict[str, float]:
    s = {"si_sdr": float(quality.si_sdr(target, estimate)), "lsd": float(quality.lsd(target, estimate))}
    if index < self.visqol_items:
      s["visqol"] = float(quality.visqol(target, estimate, self.sample_rate))
    return s

  def __call__(self, gen_params, step: int, logger: RunLogger) -> dict[str, float]:
    params = jax.device_put(jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), gen_params),
                            self._device)
    rows = []
    for i, item in enumerate(self.items):
      restored = np.asarray(self._forward(params, item["degraded"][None]))[0]
      score = self._score(item["target"], restored, i)
      rows.append(score)
      if i < self.audio_items:
        self._log_item(logger, step, i, item, restored)
    out = {}
    for name in rows[0]:
      values = [r[name] for r in rows if name in r]
      inputs = [r[name] for r in self.input_scores if name in r]
      out[f"val/{name}"] = float(np.mean(values))
      out[f"val/{name}_gain"] = float(np.mean(values) - np.mean(inputs))
    return out

  def _log_item(self, logger, step, i, item, restored):
    if not logger.enabled:
      return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(12, 3), sharey=True)
    for ax, (name, wav) in zip(axes, (("degraded", item["degraded"]), ("restored", restored),
                                      ("clean", item["target"]))):
      logger.audio(step, f"val_{i}/{name}", wav, self.sample_rate)
      ax.specgram(wav.mean(0), NFFT=1024, Fs=self.sample_rate, noverlap=768, cmap="magma", vmin=-140)
      ax.set_title(f"{name} ({item['codec']} {item['bitrate']} kbit/s)" if name == "degraded" else name)
      ax.set_xlabel("s")
    axes[0].set_ylabel("Hz")
    fig.tight_layout()
    logger.figure(step, f"val_{i}/spectrogram", fig)
