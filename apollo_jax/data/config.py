"""Data configuration: one ``ml_collections.ConfigDict`` that training configs embed."""

from __future__ import annotations

import ml_collections


def default_data_config() -> ml_collections.ConfigDict:
  """Defaults follow the paper (section III-A) and the published data code.

  With ``train_dirs`` empty, training and validation use the built-in demo corpus, generated
  on first use under ``cache_dir``.
  """
  return ml_collections.ConfigDict(dict(
      # Sources.
      layout="stems",               # musdb | moisesdb | stems | paired (sources.LAYOUTS)
      train_dirs=(),                # folders of that layout; () -> demo corpus
      train_subset="train",         # MUSDB18-HQ subset folder for training
      val_dirs=(),                  # tracks the fixed validation set is cut from; () -> demo
      val_subset="test",            # MUSDB18-HQ subset folder for validation
      index_cache="",               # optional JSON index of train_dirs (delete when data changes)
      cache_dir="~/.cache/apollo_jax",  # demo corpus and written validation sets
      demo_tracks=20,
      demo_val_tracks=4,
      demo_seconds=12.0,
      demo_seed=0,
      demo_source="auto",           # soundfont | synth | auto (soundfont when FluidSynth
                                    # and a GM soundfont are found, else synth)
      demo_soundfont="",            # "" -> FluidR3_GM.sf2 from the system folders
      # Mixing (paper III-A).
      sample_rate=44100,
      channels=2,
      segment_seconds=3.0,
      max_stems=8,                  # 1..max_stems stems from different tracks
      p_mixture=0.5,                # probability of a track's own mixture instead
      gain_db=(-10.0, 10.0),        # uniform gain per stem
      activity_threshold_db=-50.0,  # a 50 ms frame is active above this RMS (dBFS)
      activity_min_fraction=0.5,    # a crop is used when this fraction of frames is active
      max_crop_tries=10,            # random crops tried before taking the most active one
      # Degradation: codec and bitrate drawn per item, uniformly.
      codecs=("mp3",),              # any of apollo_jax.data.codecs.CODECS
      bitrates=(24, 32, 48, 64, 96, 128),  # kbit/s
      mp3_quality=3,                # LAME -q (3 is LAME's default; 7 is about 2x faster)
      p_band_limit=0.0,             # share of items whose clean music is first band-limited
      band_limit_hz=(8000.0, 20000.0),  # its cutoff, uniform (not in the published recipe)
      # Fixed validation set.
      val_dir="",                   # "" -> cache_dir/validation/<settings hash>
      val_items=24,
      val_seconds=5.0,
      val_seed=20250101,
      # grain.
      num_workers=0,                # mp_prefetch worker processes (0: in-process)
      read_threads=1,               # ReadOptions.num_threads (per process)
      read_buffer=2,                # ReadOptions.prefetch_buffer_size, in batches
      worker_buffer=1,              # MultiprocessingOptions.per_worker_buffer_size
  ))
