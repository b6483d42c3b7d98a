"""The fixed validation set: pairs written to disk once, identical for every run.

Layout of a written set (also a valid ``"paired"`` source)::

    <dir>/clean/0000.flac     <dir>/degraded/0000.flac     ...     <dir>/manifest.json

``manifest.json`` lists every item with its codec, bitrate (kbit/s) and category
(``"mixture"``, ``"<k>-stems"``, or ``"paired"`` for real codec output) and the settings
the set was made with. It is written last, so a folder with a manifest is complete.
Codec/bitrate combinations cycle over the items, so each bitrate is equally represented.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

import numpy as np

from apollo_jax import audio
from apollo_jax.data import demo, mixing, sources

MANIFEST = "manifest.json"
_VERSION = 1


def validation_index(cfg) -> sources.Index:
  """Tracks the validation set is cut from: ``cfg.val_dirs``, or demo tracks made with a
  different seed than the training ones."""
  if cfg.val_dirs:
    return sources.scan(list(cfg.val_dirs), cfg.layout, cfg.val_seconds, cfg.val_subset)
  path = demo.ensure_demo_corpus(cfg.cache_dir, tracks=cfg.demo_val_tracks,
                                 seconds=cfg.demo_seconds, seed=cfg.demo_seed + 1,
                                 sample_rate=cfg.sample_rate, source=cfg.demo_source,
                                 soundfont=cfg.demo_soundfont or None)
  return sources.scan(path, "stems", cfg.val_seconds)


def _settings(cfg) -> dict[str, Any]:
  keys = ("layout", "val_dirs", "val_subset", "demo_val_tracks", "demo_seconds", "demo_seed",
          "demo_source", "demo_soundfont",
          "sample_rate", "channels", "max_stems", "p_mixture", "gain_db",
          "activity_threshold_db", "activity_min_fraction", "max_crop_tries", "codecs",
          "bitrates", "mp3_quality", "val_items", "val_seconds", "val_seed")
  settings = {k: (list(cfg[k]) if isinstance(cfg[k], (list, tuple)) else cfg[k]) for k in keys}
  if not cfg.val_dirs:  # what "auto" resolved to, so installing FluidSynth makes a new set
    _, soundfont, _ = demo.resolve_source(cfg.demo_source, cfg.demo_soundfont or None)
    settings["demo_corpus"] = demo.corpus_name(cfg.demo_val_tracks, cfg.demo_seconds,
                                               cfg.demo_seed + 1, cfg.sample_rate, soundfont)
  return settings


def default_dir(cfg) -> str:
  """``cfg.val_dir``, or a folder under ``cfg.cache_dir`` named by a hash of the settings."""
  if cfg.val_dir:
    return os.path.abspath(os.path.expanduser(cfg.val_dir))
  digest = hashlib.sha1(json.dumps(_settings(cfg), sort_keys=True).encode()).hexdigest()[:12]
  return os.path.join(os.path.abspath(os.path.expanduser(cfg.cache_dir)), "validation", digest)


def write_validation_set(index: sources.Index, out_dir: str, spec: mixing.MixSpec,
                         num_items: int, seed: int, settings: dict | None = None) -> str:
  """Writes ``num_items`` pairs of ``spec.segment_seconds`` each into ``out_dir``.

  Item ``i`` is drawn from ``np.random.default_rng([seed, i])`` starting at track
  ``i % len(tracks)``. Paired sources are cropped, not re-encoded. The folder appears
  complete or not at all (written to a temporary folder, then renamed).
  """
  if os.path.isfile(os.path.join(out_dir, MANIFEST)):
    raise FileExistsError(f"{out_dir} already holds a validation set; delete it to rewrite")
  tmp = f"{out_dir.rstrip(os.sep)}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(os.path.join(tmp, "clean"))
  os.makedirs(os.path.join(tmp, "degraded"))
  combos = [(c, b) for c in spec.codecs for b in spec.bitrates]
  items = []
  for i in range(num_items):
    rng = np.random.default_rng([seed, i])
    first = i % len(index.tracks)
    if index.layout == "paired":
      pair = mixing.paired_item(index.tracks[first], rng, spec)
      codec, category = "unknown", "paired"
    else:
      codec, bitrate = combos[i % len(combos)]
      clean, count = mixing.mix(index.tracks, first, rng, spec)
      pair = mixing.make_pair(clean, codec, bitrate, spec)
      category = "mixture" if count == 0 else f"{count}-stems"
    name = f"{i:04d}"
    for kind, key in (("clean", "target"), ("degraded", "degraded")):
      audio.save(os.path.join(tmp, kind, f"{name}.flac"), pair[key], spec.sample_rate)
    items.append({"name": name, "clean": f"clean/{name}.flac",
                  "degraded": f"degraded/{name}.flac", "codec": codec,
                  "bitrate": int(pair["bitrate"]), "category": category,
                  "track": index.tracks[first]["name"]})
  manifest = {"version": _VERSION, "sample_rate": spec.sample_rate,
              "seconds": spec.segment_seconds, "seed": seed, "roots": index.roots,
              "settings": settings or {}, "items": items}
  with open(os.path.join(tmp, MANIFEST), "w") as f:
    json.dump(manifest, f, indent=1)
  os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
  try:
    os.rename(tmp, out_dir)
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    if not os.path.isfile(os.path.join(out_dir, MANIFEST)):
      raise
  return out_dir


def ensure_validation_set(cfg) -> str:
  """Folder of the validation set for data config ``cfg``; written on first use only."""
  out_dir = default_dir(cfg)
  if not os.path.isfile(os.path.join(out_dir, MANIFEST)):
    spec = mixing.MixSpec.from_config(cfg, segment_seconds=cfg.val_seconds)
    write_validation_set(validation_index(cfg), out_dir, spec, cfg.val_items, cfg.val_seed,
                         _settings(cfg))
  return out_dir


class ValidationSet:
  """A written validation set as a random-access source (works with
  ``grain.MapDataset.source``): item ``i`` is ``{"name", "target", "degraded", "codec",
  "bitrate", "category"}`` with audio float32 ``(channels, samples)``, read on access."""

  def __init__(self, directory: str):
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
      raise sources.DataError(f"{directory}: no {MANIFEST}; write the set with "
                              "ensure_validation_set(cfg) or write_validation_set(...)")
    with open(path) as f:
      self.manifest = json.load(f)
    self.directory = directory
    self.sample_rate = int(self.manifest["sample_rate"])

  def __len__(self) -> int:
    return len(self.manifest["items"])

  def __getitem__(self, i: int) -> dict[str, Any]:
    item = self.manifest["items"][i]
    clean, _ = audio.load(os.path.join(self.directory, item["clean"]))
    degraded, _ = audio.load(os.path.join(self.directory, item["degraded"]))
    return {"name": item["name"], "target": clean, "degraded": degraded,
            "codec": item["codec"], "bitrate": np.int32(item["bitrate"]),
            "category": item["category"]}

  def __iter__(self):
    return (self[i] for i in range(len(self)))
