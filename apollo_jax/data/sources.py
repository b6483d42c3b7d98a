"""Dataset sources: indexes of tracks and their stems, built by scanning folders.

Only headers are read here (``audio.info``); audio is read later, a segment at a time.
Every index is plain data (lists, dicts, strings, numbers) so it pickles cheaply into grain
worker processes and round-trips through JSON for the optional index cache.

Layouts (``LAYOUTS``):
  - ``"musdb"``: MUSDB18-HQ, ``<root>/<subset>/<track>/{bass,drums,other,vocals,mixture}.wav``
    (``root`` may also be the subset folder itself).
  - ``"moisesdb"``: MoisesDB, ``<root>/<track_id>/<stem>/<file>.wav``; the files in a stem
    folder are summed into that stem; ``data.json`` is optional and unused.
  - ``"stems"``: any ``<root>/<track>/<stem>.{wav,flac,...}``; a file named ``mixture`` is
    the track's mixture (otherwise the mixture is the sum of the stems).
  - ``"paired"``: ``<root>/clean/**`` and ``<root>/degraded/**`` with the same relative
    names, for fine-tuning on real codec output (no codec is applied).

A track is ``{"name", "stems": {stem: [file, ...]}, "mixture": [file, ...], "seconds"}``
and a file is ``{"path", "rate", "channels", "frames"}``. Pairs are
``{"name", "clean": file, "degraded": file, "seconds"}``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from apollo_jax import audio

LAYOUTS = ("musdb", "moisesdb", "stems", "paired")
# Formats libsndfile seeks in, so segments are read without decoding whole files.
STEM_EXTS = audio.SOUNDFILE_EXTS  # stems are read in random crops: seekable formats only
MIXTURE = "mixture"
_INDEX_VERSION = 1
log = logging.getLogger(__name__)


class DataError(ValueError):
  """A dataset that cannot be used (no usable audio, wrong layout, bad config)."""


@dataclasses.dataclass
class Index:
  """Usable tracks (or pairs) of one or more folders and the files that were skipped.

  Attributes:
    layout: one of ``LAYOUTS``.
    roots: the folders scanned.
    tracks: track dicts (stems layouts) or pair dicts (``"paired"``), sorted by name.
    skipped: ``{path: reason}`` for every file left out (unreadable, empty, too short...).
  """
  layout: str
  roots: list[str]
  tracks: list[dict[str, Any]]
  skipped: dict[str, str]

  def to_json(self) -> str:
    return json.dumps({"version": _INDEX_VERSION, **dataclasses.asdict(self)}, indent=0)

  @classmethod
  def from_json(cls, text: str) -> "Index":
    d = json.loads(text)
    if d.pop("version", None) != _INDEX_VERSION:
      raise DataError("index cache has an old format version")
    return cls(**d)


def _listdir(folder: str, skipped: dict[str, str] | None) -> list[str]:
  """Entries of ``folder``; an unreadable one is recorded in ``skipped`` (like unreadable
  files) and has none. Without ``skipped`` (a root folder) it is a DataError."""
  try:
    return os.listdir(folder)
  except OSError as e:
    if skipped is None:
      raise DataError(f"{folder}: cannot list the folder ({e.strerror or e})") from None
    skipped[folder] = f"unreadable folder ({e.strerror or e})"
    return []


def _audio_files(folder: str, skipped: dict[str, str] | None = None) -> list[str]:
  return sorted(f for f in _listdir(folder, skipped) if audio.is_audio_name(f, STEM_EXTS))


def _subfolders(folder: str, skipped: dict[str, str] | None = None) -> list[str]:
  return sorted(d for d in _listdir(folder, skipped)
                if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))


def _probe(path: str, min_seconds: float, skipped: dict[str, str]) -> dict[str, Any] | None:
  """Header of one file, or None (recorded in ``skipped``) when it cannot be used."""
  try:
    rate, channels, frames = audio.info(path)
  except audio.AudioError as e:
    skipped[path] = f"unreadable ({e})"
    return None
  if frames <= 0:
    skipped[path] = "empty"
  elif frames < min_seconds * rate:
    skipped[path] = f"too short ({frames / rate:.2f} s < {min_seconds:g} s)"
  else:
    return {"path": path, "rate": rate, "channels": channels, "frames": frames}
  return None


def _seconds(files: list[dict[str, Any]]) -> float:
  return min(f["frames"] / f["rate"] for f in files)


def _track(name: str, stem_paths: dict[str, list[str]], min_seconds: float,
           skipped: dict[str, str]) -> dict[str, Any] | None:
  stems, mixture = {}, []
  for stem, paths in sorted(stem_paths.items()):
    files = [f for f in (_probe(p, min_seconds, skipped) for p in paths) if f]
    if len(files) == len(paths) and files:
      if stem == MIXTURE:
        mixture = files
      else:
        stems[stem] = files
    else:  # a stem folder with a broken part is unusable as a whole
      for p in paths:
        skipped.setdefault(p, f"part of stem '{stem}' with a bad file")
  if not stems and not mixture:
    return None
  return {"name": name, "stems": stems, "mixture": mixture,
          "seconds": _seconds([f for fs in stems.values() for f in fs] + mixture)}


def _scan_stems(root: str, min_seconds: float, skipped: dict[str, str]) -> list[dict[str, Any]]:
  tracks = []
  for name in _subfolders(root):
    folder = os.path.join(root, name)
    paths = {os.path.splitext(f)[0]: [os.path.join(folder, f)]
             for f in _audio_files(folder, skipped)}
    track = _track(name, paths, min_seconds, skipped)
    if track:
      tracks.append(track)
  return tracks


def _scan_moisesdb(root: str, min_seconds: float, skipped: dict[str, str]) -> list[dict[str, Any]]:
  tracks = []
  for name in _subfolders(root):
    folder = os.path.join(root, name)
    paths = {}
    for stem in _subfolders(folder, skipped):
      files = [os.path.join(folder, stem, f)
               for f in _audio_files(os.path.join(folder, stem), skipped)]
      if files:
        paths[stem] = files
    track = _track(name, paths, min_seconds, skipped)
    if track:
      tracks.append(track)
  return tracks


def _relative_audio_files(folder: str, skipped: dict[str, str]) -> list[str]:
  def unreadable(e: OSError) -> None:
    if e.filename != folder:
      skipped[e.filename] = f"unreadable folder ({e.strerror or e})"
    else:
      raise DataError(f"{folder}: cannot list the folder ({e.strerror or e})")

  return sorted(os.path.relpath(f, folder)
                for f in audio.find_audio(folder, STEM_EXTS, onerror=unreadable))


def _scan_paired(root: str, min_seconds: float, skipped: dict[str, str]) -> list[dict[str, Any]]:
  clean_dir, degraded_dir = os.path.join(root, "clean"), os.path.join(root, "degraded")
  for d in (clean_dir, degraded_dir):
    if not os.path.isdir(d):
      raise DataError(f"{root}: layout 'paired' expects the folders clean/ and degraded/ "
                      f"with the same relative file names; {d} is missing")
  pairs = []
  for rel in _relative_audio_files(clean_dir, skipped):
    other = os.path.join(degraded_dir, rel)
    if not os.path.isfile(other):
      skipped[os.path.join(clean_dir, rel)] = "no degraded file with the same name"
      continue
    clean = _probe(os.path.join(clean_dir, rel), min_seconds, skipped)
    degraded = _probe(other, min_seconds, skipped)
    if clean and degraded:
      if clean["rate"] != degraded["rate"]:
        skipped[other] = (f"sample rate {degraded['rate']} differs from the clean "
                          f"file's {clean['rate']}")
        continue
      pairs.append({"name": rel, "clean": clean, "degraded": degraded,
                    "seconds": _seconds([clean, degraded])})
  return pairs


_EXPECTED = {
    "musdb": "<track>/{bass,drums,other,vocals,mixture}.wav under train/ or test/",
    "moisesdb": "<track_id>/<stem>/<file>.wav",
    "stems": f"<track>/<stem>{{{','.join(sorted(STEM_EXTS))}}}",
    "paired": "clean/<name> and degraded/<name> with the same relative names",
}


def scan(roots: str | list[str], layout: str, min_seconds: float = 0.0, subset: str = "train",
         cache: str | None = None) -> Index:
  """Indexes the usable audio of one or more folders of the same layout.

  Args:
    roots: folder or folders.
    layout: one of ``LAYOUTS``.
    min_seconds: files shorter than this (e.g. the training segment) are skipped.
    subset: MUSDB18-HQ subset folder (``"train"`` or ``"test"``).
    cache: optional JSON file: read if it exists and was made for the same folders and
      layout, written otherwise. Delete it when the data changes.

  Raises:
    DataError: unknown layout, missing folder, or no usable audio at all.
  """
  if layout not in LAYOUTS:
    raise DataError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
  roots = [roots] if isinstance(roots, str) else list(roots)
  if not roots:
    raise DataError(f"no folders given for layout {layout!r}")
  roots = [os.path.abspath(os.path.expanduser(r)) for r in roots]
  if cache and os.path.isfile(cache):
    try:
      with open(cache) as f:
        index = Index.from_json(f.read())
      if index.roots == roots and index.layout == layout and index.tracks:
        return index
    except (DataError, ValueError, TypeError, KeyError):
      pass  # unreadable or stale: scan again
  tracks, skipped = [], {}
  for root in roots:
    if not os.path.isdir(root):
      raise DataError(f"{root}: not a folder (layout {layout!r} expects {_EXPECTED[layout]})")
    folder = root
    if layout == "musdb" and os.path.isdir(os.path.join(root, subset)):
      folder = os.path.join(root, subset)
    scanner = {"musdb": _scan_stems, "stems": _scan_stems, "moisesdb": _scan_moisesdb,
               "paired": _scan_paired}[layout]
    found = scanner(folder, min_seconds, skipped)
    prefix = f"{os.path.basename(root)}/" if len(roots) > 1 else ""
    tracks += [{**t, "name": prefix + t["name"]} for t in found]
  for path, reason in sorted(skipped.items()):
    log.warning("skipping %s: %s", path, reason)
  if not tracks:
    raise DataError(
        f"no usable audio in {', '.join(roots)} for layout {layout!r}: expected "
        f"{_EXPECTED[layout]} (files of at least {min_seconds:g} s); {len(skipped)} files "
        f"were skipped")
  log.info("%s (%s): %d %s, %d files skipped", ", ".join(roots), layout, len(tracks),
               "pairs" if layout == "paired" else "tracks", len(skipped))
  index = Index(layout=layout, roots=roots, tracks=tracks, skipped=skipped)
  if cache:
    os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
    tmp = f"{cache}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
      f.write(index.to_json())
    os.replace(tmp, cache)
  return index
