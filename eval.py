"""Scores restorations per codec bitrate and kind of music, as in the paper (Table II, Fig. 2).

  python eval.py --checkpoint apollo.bin --data clean_dir --out eval_out \
      [--checkpoint other.bin] [--bitrates 32,48,64,96,128] [--codec mp3] [--workers 1]

``clean_dir`` holds clean audio files (any format and rate) and optionally ``manifest.csv``
(``file,category`` with categories such as vocal / single / multi / multi+vocal). Writes
results.csv/json, table.md, bitrate_<metric>.png, categories.png and spectrograms/ into the
output folder; rerunning the same command resumes from its cache. Exit code 2 on a setup
error (nothing usable, checkpoint not loadable, bad option). See docs/README_eval.md.
"""

from __future__ import annotations

import argparse
import sys

if __name__ == "__main__":  # before jax is imported: the restart replaces this process
  from apollo_jax.data import heap
  heap.restart_with_huge_pages()  # XLA's per-call buffers on 2 MiB pages (see heap.py)

from apollo_jax import compile_cache, xla_options
from apollo_jax.evaluation import metrics
from apollo_jax.evaluation.evaluate import EvalError, EvalOptions, run


def _ints(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(b) for b in text.split(",") if b.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> tuple[str, ...]:
  return tuple(m.strip() for m in text.split(",") if m.strip())


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", action="append", default=[], metavar="CKPT",
                 help="generator checkpoint (repeat to compare several); none scores the codec alone")
  p.add_argument("--data", required=True, help="folder of clean audio files")
  p.add_argument("--out", required=True, help="output folder (also holds the resume cache)")
  p.add_argument("--manifest", help="CSV 'file,category' (default: DATA/manifest.csv if present)")
  p.add_argument("--bitrates", type=_ints, default=(32, 48, 64, 96, 128), help="kbit/s, comma-separated")
  p.add_argument("--codec", default="mp3", help="codec of apollo_jax.data.codecs (default mp3)")
  p.add_argument("--metrics", type=_names, default=metrics.METRICS,
                 help=f"comma-separated, default {','.join(metrics.METRICS)} (drop visqol for speed)")
  p.add_argument("--workers", type=int, default=1, help="scoring processes (0: score in this process)")
  p.add_argument("--clip-seconds", type=float, help="score only the first N seconds of each file")
  p.add_argument("--spectrograms", type=int, default=3, help="files with spectrogram PNGs (default 3)")
  p.add_argument("--sample-rate", type=int, default=None,
                 help="rate of a checkpoint that does not record it (default: inferred from its "
                      "FFT size, 20 ms window); without a checkpoint the scoring rate (default 44100)")
  p.add_argument("--win-ms", type=float, default=None,
                 help="STFT window in ms of a checkpoint that does not record it (default 20)")
  p.add_argument("--chunk-seconds", type=float, help="restore chunk length (default: inference's)")
  p.add_argument("--overlap-seconds", type=float, help="restore chunk overlap (default: inference's)")
  p.add_argument("--batch-chunks", type=int, help="chunks restored per batch (default: inference's)")
  p.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  xla_options.use_compile_options()  # before the first computation: shorter CPU compiles
  compile_cache.setup()  # Reruns and other evaluations of the same model skip compiling.
  restore_kwargs = tuple((k, v) for k, v in (("chunk_seconds", args.chunk_seconds),
                                             ("overlap_seconds", args.overlap_seconds),
                                             ("batch_chunks", args.batch_chunks)) if v is not None)
  try:
    opts = EvalOptions(bitrates=args.bitrates, codec=args.codec, metrics=args.metrics,
                       workers=args.workers, clip_seconds=args.clip_seconds,
                       spectrograms=args.spectrograms, restore_kwargs=restore_kwargs,
                       progress=not args.no_progress)
    run(args.checkpoint, args.data, args.out, opts, manifest=args.manifest,
        sample_rate=args.sample_rate, win_ms=args.win_ms)
  except EvalError as e:
    print(f"eval.py: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("eval.py: interrupted; rerun the same command to resume from the cache", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  sys.exit(main())
