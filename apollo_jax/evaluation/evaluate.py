"""Scoring restorations the way the paper reports them (Table II, Fig. 2).

For every clean file and bitrate: degrade with the project's codec (:mod:`apollo_jax.data.codecs`),
restore with each checkpoint (the chunked :func:`apollo_jax.inference.chunked.restore_array`, the
code path of the restore CLI), and score against the clean file with
:mod:`apollo_jax.evaluation.metrics`. The degraded input itself is scored as a system too (the "MP3"
row), so every table shows the gain.

Levels: a clean file goes into the codec at its own level, unlike training mixes, which
:mod:`apollo_jax.data.mixing` brings to a -1 dBFS peak first (random stem gains would
otherwise give unrealistic levels). An evaluation file is music as a user has it, already
at a mastered level; rescaling it would score a file nobody encodes.

One row per file x bitrate x system. Rows are cached one JSON file each under
``OUT/cache/`` as soon as they are scored, keyed by the file (path, size, mtime), the
bitrate, the system (checkpoint path, size, mtime, restore options) and the clip length,
so an interrupted run resumes where it stopped. Scoring runs in ``workers`` spawned
processes while the main process degrades and restores the next items.

Clean files that cannot be decoded, are silent (peak below -60 dBFS) or shorter than one
second are skipped and listed, never fatal. :class:`EvalError` is the one error a user
gets for an unusable setup (nothing usable, checkpoint not loadable, bad option).
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
from typing import Any, Callable

import numpy as np

from apollo_jax import audio as audio_io
from apollo_jax.data import codecs
from apollo_jax.evaluation import metrics

MANIFEST_NAME = "manifest.csv"
DEFAULT_CATEGORY = "all"
MIN_SECONDS = 1.0
SILENCE_DBFS = -60.0
CACHE_VERSION = 1


class EvalError(Exception):
  """An unusable evaluation setup, reported as one line (exit code 2 in ``eval.py``)."""


@dataclasses.dataclass(frozen=True)
class Item:
  """One clean file: ``name`` is its path relative to the data folder (POSIX separators)."""
  path: str
  name: str
  category: str


@dataclasses.dataclass
class System:
  """A row label of the tables: the codec input (``params is None``) or a checkpoint."""
  name: str
  checkpoint: str | None = None
  cfg: Any = None
  params: Any = None


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """What to evaluate and how.

  Attributes:
    bitrates: codec bitrates in kbit/s.
    codec: one of ``codecs.CODECS``.
    metrics: names from ``metrics.METRICS`` (leave out "visqol" for a fast run).
    workers: scoring processes; 0 scores in the main process.
    clip_seconds: score only the first this many seconds of each file (None: whole file).
    spectrograms: how many files get a clean / degraded / restored spectrogram PNG (at the
      lowest bitrate).
    restore_kwargs: passed to ``chunked.restore_array`` (chunk_seconds, overlap_seconds,
      batch_chunks); empty keeps its defaults.
    progress: show a progress bar.
  """
  bitrates: tuple[int, ...] = (32, 48, 64, 96, 128)
  codec: str = "mp3"
  metrics: tuple[str, ...] = metrics.METRICS
  workers: int = 1
  clip_seconds: float | None = None
  spectrograms: int = 3
  restore_kwargs: tuple[tuple[str, Any], ...] = ()
  progress: bool = True

  def __post_init__(self):
    if not self.bitrates or any(int(b) <= 0 for b in self.bitrates):
      raise EvalError(f"bitrates must be positive kbit/s values, got {list(self.bitrates)}")
    if self.codec not in codecs.CODECS:
      raise EvalError(f"unknown codec {self.codec!r}; expected one of {', '.join(codecs.CODECS)}")
    for b in self.bitrates:
      try:
        codecs.check_bitrate(self.codec, b)
      except ValueError as e:
        raise EvalError(str(e)) from None
    unknown = [m for m in self.metrics if m not in metrics.HIGHER_IS_BETTER]
    if unknown or not self.metrics:
      raise EvalError(f"unknown metrics {unknown or '(none given)'}; choose from {', '.join(metrics.HIGHER_IS_BETTER)}")
    if self.workers < 0:
      raise EvalError(f"workers must be >= 0, got {self.workers}")
    if self.clip_seconds is not None and self.clip_seconds < MIN_SECONDS:
      raise EvalError(f"clip_seconds must be at least {MIN_SECONDS}, got {self.clip_seconds}")


# ---------------------------------------------------------------- inputs

def read_manifest(path: str) -> dict[str, str]:
  """CSV with a header ``file,category`` (file relative to the data folder) -> {file: category}."""
  try:
    with open(path, newline="", encoding="utf-8") as f:
      rows = list(csv.DictReader(f))
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise EvalError(f"cannot read manifest {path}: {e}") from None
  if not rows or not {"file", "category"} <= set(rows[0]):
    raise EvalError(f"manifest {path} needs a header line 'file,category' and at least one row")
  out = {}
  for i, row in enumerate(rows, start=2):
    name, cat = (row.get("file") or "").strip(), (row.get("category") or "").strip()
    if not name or not cat:
      raise EvalError(f"manifest {path} line {i}: empty file or category in {row}")
    out[name.replace(os.sep, "/")] = cat
  return out


def find_items(data_dir: str, manifest: str | None = None) -> list[Item]:
  """Audio files under ``data_dir`` (recursively, sorted) with their categories.

  ``manifest`` defaults to ``data_dir/manifest.csv`` when that exists. Without one every
  file is in category ``"all"``; files the manifest does not list are in ``"other"``.
  """
  if not os.path.isdir(data_dir):
    raise EvalError(f"data folder not found: {data_dir}")
  if manifest is None and os.path.isfile(os.path.join(data_dir, MANIFEST_NAME)):
    manifest = os.path.join(data_dir, MANIFEST_NAME)
  categories = read_manifest(manifest) if manifest else {}
  items = []
  for path in audio_io.find_audio(data_dir):
    name = os.path.relpath(path, data_dir).replace(os.sep, "/")
    cat = categories.get(name, "other") if categories else DEFAULT_CATEGORY
    items.append(Item(path, name, cat))
  if not items:
    raise EvalError(f"no audio files ({', '.join(sorted(audio_io.AUDIO_EXTS))}) found in {data_dir}")
  return items


def load_clean(path: str, sample_rate: int, clip_seconds: float | None = None) -> np.ndarray:
  """Clean reference ``(channels, samples)`` at ``sample_rate``; AudioError if unusable."""
  x, _ = audio_io.load(path, sample_rate)
  if clip_seconds is not None:
    x = x[:, :int(round(clip_seconds * sample_rate))]
  if x.shape[1] < MIN_SECONDS * sample_rate:
    raise audio_io.AudioError(f"shorter than {MIN_SECONDS:g} s ({x.shape[1] / sample_rate:.2f} s)")
  peak = float(np.max(np.abs(x)))
  if peak < 10 ** (SILENCE_DBFS / 20):
    level = "digital silence" if peak == 0 else f"peak {20 * math.log10(peak):.0f} dBFS"
    raise audio_io.AudioError(f"silent ({level}, below {SILENCE_DBFS:g} dBFS)")
  return x


def load_systems(checkpoints: list[str], codec: str, sample_rate: int | None = None,
                 win_ms: float | None = None) -> list[System]:
  """The codec-input system followed by one system per checkpoint (loaded now, fail fast)."""
  systems = [System(codec.upper())]
  names = {systems[0].name}
  for ckpt in checkpoints:
    from apollo_jax.checkpoints import load_generator  # Loads only when there is a model.
    try:
      cfg, params = load_generator(ckpt, sample_rate, win_ms)
    except Exception as e:  # Any failure here is the user's checkpoint: say so in one line.
      raise EvalError(f"cannot load checkpoint {ckpt}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    stem = os.path.splitext(os.path.basename(os.path.normpath(ckpt)))[0] or "model"
    name, k = stem, 2
    while name in names:
      name, k = f"{stem}-{k}", k + 1
    names.add(name)
    systems.append(System(name, ckpt, cfg, params))
  rates = {s.cfg.sample_rate for s in systems[1:]}
  if len(rates) > 1:
    raise EvalError(f"checkpoints have different sample rates {sorted(rates)}; evaluate them separately")
  return systems


def category_clips(stems: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The paper's four test categories from one track's stems.

  ``{stem name: (channels, samples)}`` -> ``{category: (channels, samples)}``. Silent stems
  (peak below -60 dBFS) are ignored first; then ``vocal`` is the stems named like "vocal*",
  ``single`` the loudest other stem, ``multi`` the sum of the other stems (when there are at
  least two) and ``multi+vocal`` the sum of all (when there are vocals and other stems).
  """
  silent = 10 ** (SILENCE_DBFS / 20)
  stems = {n: np.asarray(x, np.float32) for n, x in stems.items() if np.max(np.abs(x)) >= silent}
  vocal = [x for n, x in stems.items() if "vocal" in n.lower()]
  other = {n: x for n, x in stems.items() if "vocal" not in n.lower()}
  out = {}
  if vocal:
    out["vocal"] = sum(vocal)
  if other:
    out["single"] = other[max(other, key=lambda n: float(np.mean(np.square(other[n]))))]
  if len(other) >= 2:
    out["multi"] = sum(other.values())
  if vocal and other:
    out["multi+vocal"] = sum(stems.values())
  return out


# ---------------------------------------------------------------- cache

def _file_id(path: str) -> dict[str, Any]:
  st = os.stat(path)
  return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _row_key(item: Item, bitrate: int, system: System, opts: EvalOptions, rate: int) -> str:
  ident = {"v": CACHE_VERSION, "file": _file_id(item.path), "rate": rate, "codec": opts.codec,
           "bitrate": int(bitrate), "clip": opts.clip_seconds, "system": system.name,
           "checkpoint": _file_id(system.checkpoint) if system.checkpoint and os.path.isfile(system.checkpoint) else system.checkpoint,
           "restore": dict(opts.restore_kwargs) if system.checkpoint else None}
  return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def _cache_read(path: str, wanted: tuple[str, ...]) -> dict | None:
  try:
    with open(path, encoding="utf-8") as f:
      row = json.load(f)
  except (OSError, ValueError):
    return None  # Missing or half-written by an older crash: recompute.
  return row if all(m in row for m in wanted) else None


def _cache_write(path: str, row: dict) -> None:
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(row, f, allow_nan=True)
  os.replace(tmp, path)


# ---------------------------------------------------------------- the run

@dataclasses.dataclass
class EvalResult:
  rows: list[dict]
  skipped: list[dict]
  spectrograms: list[str]
  cached: int
  scored: int


def _restore(system: System, degraded: np.ndarray, opts: EvalOptions) -> np.ndarray:
  from apollo_jax.inference import chunked
  out = chunked.restore_array(system.params, system.cfg, degraded, **dict(opts.restore_kwargs))
  return np.asarray(out, np.float32)


class _Scorer:
  """Scores rows here or in ``workers`` spawned processes; each scored row is cached."""

  def __init__(self, opts: EvalOptions, sample_rate: int, bar):
    self.opts, self.sample_rate, self.bar = opts, sample_rate, bar
    self.rows: dict[tuple[int, int, int], dict] = {}
    self.scored = 0
    self.pending: dict[cf.Future, tuple[tuple[int, int, int], str, dict]] = {}
    self.pool = None
    if opts.workers > 0:
      # Spawned, not forked: the parent holds JAX's threads, which fork would copy broken.
      self.pool = cf.ProcessPoolExecutor(opts.workers, mp_context=multiprocessing.get_context("spawn"))

  def _record(self, idx, path, row, scores) -> None:
    row.update(scores)
    _cache_write(path, row)
    self.rows[idx] = row
    self.scored += 1
    self.bar.update(1)

  def _finish(self, fut: cf.Future) -> None:
    self._record(*self.pending.pop(fut), fut.result())

  def submit(self, idx, path, row, clean, estimate) -> None:
    if self.pool is None:
      self._record(idx, path, row, metrics.score(clean, estimate, self.sample_rate, self.opts.metrics))
      return
    # Bound the queue: each job holds two waveforms.
    while len(self.pending) >= 2 * self.opts.workers:
      self._finish(next(cf.as_completed(list(self.pending))))
    job = self.pool.submit(metrics.score, clean, estimate, self.sample_rate, self.opts.metrics)
    self.pending[job] = (idx, path, row)

  def drain(self) -> None:
    while self.pending:
      self._finish(next(cf.as_completed(list(self.pending))))

  def close(self) -> None:
    if self.pool is not None:
      self.pool.shutdown(wait=True, cancel_futures=True)


@dataclasses.dataclass
class _Run:
  """One evaluation in progress: what :func:`evaluate` scores and what it has so far."""
  systems: list[System]
  out_dir: str
  opts: EvalOptions
  sample_rate: int
  bar: Any
  scorer: _Scorer
  skipped: list[dict] = dataclasses.field(default_factory=list)
  spec_files: list[str] = dataclasses.field(default_factory=list)
  cached: int = 0

  @property
  def bitrates(self) -> list[int]:
    return sorted({int(b) for b in self.opts.bitrates})

  def cached_rows(self, i: int, item: Item, j: int, bitrate: int) -> list[tuple[int, System, str]]:
    """Takes this item x bitrate's cached rows; returns the systems still to score."""
    todo = []
    for k, system in enumerate(self.systems):
      key = _row_key(item, bitrate, system, self.opts, self.sample_rate)
      path = os.path.join(self.out_dir, "cache", f"{key}.json")
      hit = _cache_read(path, self.opts.metrics)
      if hit is not None:
        hit["category"] = item.category  # The manifest may have changed since.
        self.scorer.rows[(i, j, k)] = hit
        self.cached += 1
        self.bar.update(1)
      else:
        todo.append((k, system, path))
    return todo

  def score_item(self, i: int, item: Item) -> None:
    """Degrades, restores and scores one clean file at every bitrate (or skips it)."""
    from apollo_jax.evaluation import report as eval_report  # matplotlib only when plotting.
    bitrates, systems, opts, rate = self.bitrates, self.systems, self.opts, self.sample_rate
    try:
      clean = load_clean(item.path, rate, opts.clip_seconds)
    except audio_io.AudioError as e:
      self.skipped.append({"file": item.name, "reason": str(e).removeprefix(f"{item.path}: ")})
      self.bar.update(len(bitrates) * len(systems))
      return
    want_spec = len(self.spec_files) < opts.spectrograms
    spec_dir = os.path.join(self.out_dir, "spectrograms")
    for j, bitrate in enumerate(bitrates):
      todo = self.cached_rows(i, item, j, bitrate)
      png = os.path.join(spec_dir, eval_report.spectrogram_name(item.name, opts.codec, bitrate))
      spec_now = want_spec and bitrate == bitrates[0]
      if spec_now:
        self.spec_files.append(png)
      if not todo and not (spec_now and not os.path.exists(png)):
        continue
      try:
        degraded = codecs.degrade(clean, rate, opts.codec, bitrate)
      except ValueError as e:
        self.skipped.append({"file": item.name, "reason": f"{opts.codec} at {bitrate} kbit/s failed: {e}"})
        self.bar.update((len(bitrates) - j) * len(systems) - (len(systems) - len(todo)))
        return
      estimates = {k: degraded if system.params is None else _restore(system, degraded, opts)
                   for k, system in enumerate(systems)
                   if spec_now or any(t[0] == k for t in todo)}
      for k, system, path in todo:
        row = {"file": item.name, "category": item.category, "codec": opts.codec,
               "bitrate": bitrate, "system": system.name,
               "seconds": round(clean.shape[1] / rate, 3)}
        self.scorer.submit((i, j, k), path, row, clean, estimates[k])
      if spec_now:
        os.makedirs(spec_dir, exist_ok=True)
        eval_report.plot_spectrograms(
            png, [("clean", clean)] + [(s.name, estimates[k]) for k, s in enumerate(systems)],
            rate, f"{item.name} - {opts.codec.upper()} {bitrate} kbit/s")

  def result(self) -> EvalResult:
    failed = {s["file"] for s in self.skipped}
    rows = self.scorer.rows
    ordered = [rows[k] for k in sorted(rows) if rows[k]["file"] not in failed]
    return EvalResult(ordered, self.skipped, [p for p in self.spec_files if os.path.exists(p)],
                      self.cached, self.scorer.scored)


def evaluate(items: list[Item], systems: list[System], out_dir: str, opts: EvalOptions,
             sample_rate: int) -> EvalResult:
  """Degrades, restores and scores every file x bitrate x system (cached rows are reused).

  Returns the rows in (file, bitrate, system) order and the skipped files with reasons.
  """
  from tqdm import tqdm
  os.makedirs(os.path.join(out_dir, "cache"), exist_ok=True)
  total = len(items) * len({int(b) for b in opts.bitrates}) * len(systems)
  bar = tqdm(total=total, unit="score", disable=not opts.progress, dynamic_ncols=True)
  run = _Run(systems, out_dir, opts, sample_rate, bar, _Scorer(opts, sample_rate, bar))
  try:
    for i, item in enumerate(items):
      bar.set_description(item.name[-30:])
      run.score_item(i, item)
    run.scorer.drain()
  finally:
    bar.close()
    run.scorer.close()
  return run.result()


def run(checkpoints: list[str], data_dir: str, out_dir: str, opts: EvalOptions,
        manifest: str | None = None, sample_rate: int | None = None,
        log: Callable[[str], None] = print, win_ms: float | None = None) -> EvalResult:
  """The whole evaluation: load, score, write every output file into ``out_dir``.

  Without checkpoints ``sample_rate`` (default 44100) is the rate the codec alone is scored
  at; with checkpoints it and ``win_ms`` are the rate and window of state dicts that do not
  record them (see ``checkpoints.load_generator``), and the checkpoints' rate is used.
  """
  from apollo_jax.evaluation import report as eval_report
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise EvalError(f"--out {out_dir} is an existing file; it must be a folder (new or "
                    f"from an earlier run)")
  items = find_items(data_dir, manifest)
  systems = load_systems(checkpoints, opts.codec, sample_rate, win_ms)
  sample_rate = systems[1].cfg.sample_rate if len(systems) > 1 else (sample_rate or 44100)
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise EvalError(f"cannot create the output folder {out_dir}: {e.strerror or e}") from None
  result = evaluate(items, systems, out_dir, opts, sample_rate)
  for s in result.skipped:
    log(f"skipped {s['file']}: {s['reason']}")
  if not result.rows:
    raise EvalError(f"nothing usable in {data_dir}: all {len(items)} files were skipped "
                    f"(first: {result.skipped[0]['file']}: {result.skipped[0]['reason']})")
  written = eval_report.write_all(out_dir, result.rows, result.skipped, [s.name for s in systems],
                                  opts, sample_rate)
  log(f"scored {result.scored} rows ({result.cached} from cache) for "
      f"{len({r['file'] for r in result.rows})} files; skipped {len(result.skipped)}")
  log(f"wrote {', '.join(written)} and {len(result.spectrograms)} spectrograms in {out_dir}")
  return result
