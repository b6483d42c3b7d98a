"""Restore audio files with Apollo.

  python -m apollo_jax.restore INPUT [INPUT ...] -o OUTPUT --checkpoint CKPT [options]

INPUT: audio files (any format soundfile or FFmpeg decodes) or folders, searched
recursively for audio extensions. One input file writes the file OUTPUT (or
OUTPUT/<name>.wav when OUTPUT is an existing folder); anything else writes into the folder
OUTPUT, mirroring the input tree (a folder given alone maps onto OUTPUT itself, several
inputs go to OUTPUT/<input name>/...).

Exit codes: 0 all restored; 1 a batch run in which some files failed (each reported on
one line and skipped, the others restored); 2 an error that stops the run before anything
is written (bad arguments, checkpoint, output location, or the only input file is bad),
reported on one line.

The library side is :mod:`apollo_jax.checkpoints` (every checkpoint format) and
:mod:`apollo_jax.inference.chunked` (chunked overlap-add).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

from apollo_jax import audio, compile_cache, xla_options
from apollo_jax import checkpoints
from apollo_jax.cli.flags import add_checkpoint_rate_flags
from apollo_jax.inference import chunked
from apollo_jax.inference.chunked import DEFAULT_CHUNK_SECONDS, DEFAULT_OVERLAP_SECONDS
from apollo_jax.signals import interrupts_as_keyboard_interrupt

# What reading a file that is not a valid checkpoint can raise; reported as one line.
CHECKPOINT_ERRORS = checkpoints.CHECKPOINT_ERRORS

_IS_INPUT = "output path is an input file; refusing to overwrite an input"


class UsageError(Exception):
  """Stops the whole run with exit code 2."""


@dataclasses.dataclass
class Job:
  """One input file and where its restoration goes; ``error`` set when it must be skipped."""
  src: str
  dst: str
  error: str | None = None


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m apollo_jax.restore",
      description="Restore lossy-compressed audio with an Apollo generator.")
  p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders (recursive)")
  p.add_argument("-o", "--output", required=True,
                 help="output file (one input file) or folder (several inputs or a folder)")
  p.add_argument("--checkpoint", required=True,
                 help="published PyTorch file, .safetensors, orbax params folder or training "
                      "checkpoint folder")
  add_checkpoint_rate_flags(p)
  p.add_argument("--chunk-seconds", type=float, default=DEFAULT_CHUNK_SECONDS,
                 help="chunk length; bounds memory (default %(default)s s: ~1.5 GB at the "
                      "paper config on CPU)")
  p.add_argument("--overlap-seconds", type=float, default=DEFAULT_OVERLAP_SECONDS,
                 help="overlap of consecutive chunks, crossfaded (default %(default)s s)")
  p.add_argument("--batch-chunks", type=int, default=1,
                 help="chunks per model call (more is faster on accelerators, needs more "
                      "memory; default %(default)s)")
  p.add_argument("--no-chunk", action="store_true",
                 help="restore each file whole (memory grows with the file length)")
  p.add_argument("--keep-rate", action="store_true",
                 help="write at the input's sample rate (default: the model's rate)")
  p.add_argument("--format", choices=["wav", "flac"], default="wav",
                 help="file type written into an output folder (default %(default)s)")
  p.add_argument("--subtype", default=None,
                 help="sample format, e.g. FLOAT, PCM_16, PCM_24 (default FLOAT for WAV, "
                      "PCM_24 for FLAC)")
  p.add_argument("--overwrite", action="store_true", help="replace existing output files")
  p.add_argument("--device", choices=["auto", "cpu", "gpu", "tpu"], default="auto",
                 help="where the model runs (default: JAX's default backend)")
  p.add_argument("--quiet", action="store_true", help="no progress bars")
  p.add_argument("--stream", action="store_true",
                 help="process hop by hop with the streaming model (one INPUT; INPUT and -o "
                      "both '-' for raw float32 PCM on stdin/stdout)")
  p.add_argument("--causal", action="store_true",
                 help="--stream: the weights were trained causal (20 ms latency)")
  p.add_argument("--channels", type=int, default=2, help="--stream raw PCM: channels (default 2)")
  p.add_argument("--keep-delay", action="store_true",
                 help="--stream raw PCM: write the leading delay instead of aligning the output")
  return p


def _one_line(msg: object) -> str:
  return " ".join(str(msg).split())


def collect_inputs(paths: list[str], exclude: str | None = None) -> list[tuple[str, str]]:
  """``(file, relative output name without extension)`` for every input file.

  Folders are searched recursively for ``audio.AUDIO_EXTS`` files (skipping ``exclude``,
  the output folder, if it lies inside); named files are taken whatever their extension.
  """
  found = []
  single_folder = len(paths) == 1
  for path in paths:
    if os.path.isfile(path):
      found.append((path, os.path.splitext(os.path.basename(path))[0]))
    elif os.path.isdir(path):
      base = "" if single_folder else os.path.basename(os.path.normpath(os.path.abspath(path)))
      files = audio.find_audio(path, exclude=exclude)
      if not files:
        raise UsageError(
            f"{path}: folder contains no audio files ({', '.join(sorted(audio.AUDIO_EXTS))})")
      for f in files:
        rel = os.path.splitext(os.path.relpath(f, path))[0]
        found.append((f, os.path.join(base, rel)))
    else:
      raise UsageError(f"{path}: no such file or folder")
  return found


def _check_writable_folder(folder: str) -> None:
  """The nearest existing ancestor of ``folder`` must be a folder we can create files in."""
  probe = os.path.abspath(folder)
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise UsageError(f"output folder {folder}: {probe} is not a folder")
  try:
    with tempfile.TemporaryFile(dir=probe):
      pass
  except OSError as e:
    raise UsageError(f"output folder {folder} is not writable ({e.strerror or e})") from None


def plan(args: argparse.Namespace) -> tuple[list[Job], bool]:
  """Output path per input and the checks that need no audio; returns ``(jobs, single)``."""
  out = args.output
  out_is_dir = os.path.isdir(out)
  single = len(args.inputs) == 1 and os.path.isfile(args.inputs[0])
  ext = "." + args.format
  if not single:
    if os.path.exists(out) and not out_is_dir:
      raise UsageError(f"output {out} is a file; with several inputs or a folder, -o must be "
                       f"a folder")
    audio.check_output_format("x" + ext, args.subtype)
  exclude = os.path.abspath(out) if out_is_dir or not os.path.splitext(out)[1] else None
  inputs = collect_inputs(args.inputs, exclude)
  if single:
    dst = os.path.join(out, inputs[0][1] + ext) if out_is_dir else out
    jobs = [Job(inputs[0][0], dst)]
    audio.check_output_format(dst, args.subtype)  # AudioError -> exit 2
    _check_writable_folder(os.path.dirname(os.path.abspath(dst)))
  else:
    _check_writable_folder(out)
    jobs = [Job(src, os.path.join(out, rel + ext)) for src, rel in inputs]
  sources = {os.path.realpath(j.src) for j in jobs}
  claimed: dict[str, str] = {}
  for j in jobs:
    real = os.path.realpath(j.dst)
    if real in sources:
      j.error = f"{j.dst}: {_IS_INPUT}"
    elif real in claimed:
      j.error = f"{j.src}: its output {j.dst} is also the output of {claimed[real]}"
    elif os.path.isdir(j.dst):
      j.error = f"{j.dst}: output exists and is a folder"
    elif os.path.exists(j.dst) and not args.overwrite:
      j.error = f"{j.dst}: output exists (pass --overwrite to replace it)"
    claimed.setdefault(real, j.src)
  return jobs, single


def _make_folders(folder: str) -> list[str]:
  """Creates ``folder`` and missing parents; returns the ones created, outermost first."""
  missing = []
  while folder and not os.path.isdir(folder):
    missing.append(folder)
    folder = os.path.dirname(folder)
  for f in reversed(missing):
    os.mkdir(f)
  return missing[::-1]


def restore_file(job: Job, restorer: chunked.ChunkedRestorer, keep_rate: bool,
                 subtype: str | None, bar=None) -> float:
  """Restores one file (streaming, atomic write); returns the seconds of audio restored.

  Nothing is left behind on failure: no output file, and no folder created for it.
  """
  cfg = restorer.cfg
  created: list[str] = []
  try:
    with audio.Reader(job.src, cfg.sample_rate) as reader:
      if bar is not None:
        bar.reset(total=restorer.num_chunks(reader.frames) if reader.frames else None)
        bar.set_description(os.path.basename(job.src)[:30])
      blocks = restorer.restore(reader.blocks(), progress=bar.update if bar is not None else None)
      rate = cfg.sample_rate
      if keep_rate and reader.file_rate != cfg.sample_rate:
        blocks = audio.resample_stream(blocks, cfg.sample_rate, reader.file_rate, reader.channels)
        rate = reader.file_rate
      blocks = iter(blocks)
      first = next(blocks)  # most decoding errors surface before anything is created
      created = _make_folders(os.path.dirname(os.path.abspath(job.dst)))
      written = 0
      with audio.Writer(job.dst, rate, reader.channels, subtype) as writer:
        for block in itertools.chain([first], blocks):
          if keep_rate:  # soxr's round trip can be one sample off: keep the input's length
            block = block[:, :max(0, reader.file_samples - written)]
          writer.write(block)
          written += block.shape[1]
        if keep_rate and written < reader.file_samples:
          writer.write(np.zeros((reader.channels, reader.file_samples - written), np.float32))
      return reader.file_samples / reader.file_rate
  except BaseException:
    for folder in reversed(created):
      try:
        os.rmdir(folder)
      except OSError:
        pass
    raise


def _stream(args) -> int:
  """``--stream``: hand one input to :func:`apollo_jax.cli.stream.run`."""
  from apollo_jax.cli import stream
  try:
    if len(args.inputs) != 1:
      raise UsageError(f"--stream takes one input, got {len(args.inputs)}")
    (source,) = args.inputs
    if (source == "-") != (args.output == "-"):
      raise UsageError("--stream: use '-' for both input and output (raw PCM) or for neither")
    if args.channels < 1:
      raise UsageError(f"--channels must be >= 1, got {args.channels}")
    if source != "-" and _same_file(source, args.output):  # even with --overwrite
      raise UsageError(f"{args.output}: output path is the input; refusing to overwrite an input")
    if source != "-" and os.path.exists(args.output) and not args.overwrite:
      raise UsageError(f"{args.output} exists (pass --overwrite to replace it)")
    stream.run(source, args.output, args.checkpoint, args.causal, args.channels, args.keep_delay,
                  sample_rate=args.sample_rate, win_ms=args.win_ms)
  except (UsageError, audio.AudioError, ValueError, OSError) as e:  # run() words checkpoint errors
    print(f"error: {_one_line(e)}", file=sys.stderr)
    return 2
  return 0


def _same_file(a: str, b: str) -> bool:
  return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _check_not_into_itself(args: argparse.Namespace, jobs: list[Job]) -> None:
  """A folder restored into itself where every output would replace its input: say so once
  instead of skipping each file with its own line."""
  folders = [p for p in args.inputs if os.path.isdir(p) and _same_file(p, args.output)]
  if folders and all(j.error and j.error.endswith(_IS_INPUT) for j in jobs):
    raise UsageError(f"-o {args.output} is the input folder {folders[0]}: restoring a folder "
                     f"into itself would overwrite every input; choose another output folder")


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  xla_options.use_compile_options()  # before the first computation: shorter CPU compiles
  compile_cache.setup()  # The next run on the same model and chunk size skips compiling.
  try:
    with interrupts_as_keyboard_interrupt():  # SIGTERM cleans up like Ctrl-C
      return _stream(args) if args.stream else _restore(args)
  except KeyboardInterrupt:
    print("error: interrupted; the output being written and the folders made for it were "
          "removed (completed outputs are kept)", file=sys.stderr)
    return 130


def _restore(args: argparse.Namespace) -> int:
  try:
    if args.batch_chunks < 1:
      raise UsageError(f"--batch-chunks must be >= 1, got {args.batch_chunks}")
    jobs, single = plan(args)
    _check_not_into_itself(args, jobs)
    if single and jobs[0].error:
      raise UsageError(jobs[0].error)
    device = chunked.select_device(args.device)
    t0 = time.perf_counter()
    try:
      cfg, params = checkpoints.load_generator(args.checkpoint, args.sample_rate, args.win_ms)
    except CHECKPOINT_ERRORS as e:
      raise UsageError(f"checkpoint {args.checkpoint}: {e}") from None
    load_s = time.perf_counter() - t0
    restorer = chunked.ChunkedRestorer(
        cfg, params, None if args.no_chunk else args.chunk_seconds, args.overlap_seconds,
        args.batch_chunks, device)
    del params
  except (UsageError, audio.AudioError, ValueError) as e:
    print(f"error: {_one_line(e)}", file=sys.stderr)
    return 2

  disable = True if args.quiet else None  # None: bars only on a terminal
  failed, seconds, t0 = 0, 0.0, time.perf_counter()
  files = tqdm(jobs, desc="files", unit="file", disable=disable, position=0)
  chunks = tqdm(desc="chunks", unit="chunk", disable=disable, position=1, leave=False)
  for job in files:
    if job.error is None:
      try:
        seconds += restore_file(job, restorer, args.keep_rate, args.subtype, chunks)
        continue
      except (audio.AudioError, OSError) as e:
        job.error = str(e) if job.src in str(e) else f"{job.src}: {e}"
    failed += 1
    tqdm.write(f"error: {_one_line(job.error)}", file=sys.stderr)
    if single:
      return 2
  chunks.close()
  files.close()
  compile_s = restorer.compile_seconds
  elapsed = time.perf_counter() - t0 - compile_s
  done = len(jobs) - failed
  rtf = elapsed / seconds if seconds else float("nan")
  print(f"restored {done} file{'s' * (done != 1)}, {seconds:.1f} s of audio in {elapsed:.1f} s: "
        f"real-time factor {rtf:.3f} (processing time / audio duration; checkpoint load "
        f"{load_s:.1f} s and compilation {compile_s:.1f} s not included)"
        + (f"; {failed} failed" if failed else ""))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
