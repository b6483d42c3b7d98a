"""``python -m apollo_jax.streaming`` / ``restore --stream``: the streaming command line.

The algorithm (one hop in, one restored hop out) is :mod:`apollo_jax.inference.streaming`;
``apollo_jax/streaming.py`` only forwards ``python -m apollo_jax.streaming`` here.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from apollo_jax import audio
from apollo_jax.checkpoints import CHECKPOINT_ERRORS, load_generator
from apollo_jax.cli.flags import add_checkpoint_rate_flags
from apollo_jax.inference.streaming import (latency_ms, latency_samples, lookahead_frames,
                                            stream_file, stream_stdio)
from apollo_jax.signals import interrupts_as_keyboard_interrupt


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m apollo_jax.streaming",
      description="Restore audio hop by hop with the streaming Apollo (file or raw f32le PCM "
                  "on stdin/stdout).")
  parser.add_argument("input", help="audio file, or '-' for raw f32le PCM on stdin")
  parser.add_argument("output", help="WAV/FLAC file, or '-' for raw f32le PCM on stdout")
  parser.add_argument("--checkpoint", required=True, help="generator weights (.safetensors, .bin, .ckpt)")
  parser.add_argument("--causal", action="store_true",
                      help="the checkpoint was trained with ApolloConfig(causal=True): stream "
                           "with one window of latency; without it the published non-causal "
                           "weights stream in lookahead mode")
  parser.add_argument("--channels", type=int, default=2, help="channels of raw PCM (default 2)")
  parser.add_argument("--keep-delay", action="store_true",
                      help="raw PCM: write the leading delay (zeros) instead of aligning the output")
  add_checkpoint_rate_flags(parser)
  args = parser.parse_args(argv)
  if (args.input == "-") != (args.output == "-"):
    parser.error("use '-' for both input and output (raw PCM) or for neither (files)")
  if args.channels < 1:
    parser.error(f"--channels must be >= 1, got {args.channels}")
  try:
    with interrupts_as_keyboard_interrupt():
      run(args.input, args.output, args.checkpoint, args.causal, args.channels, args.keep_delay,
          sample_rate=args.sample_rate, win_ms=args.win_ms)
  except (audio.AudioError, ValueError, OSError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    sys.exit(2)
  except KeyboardInterrupt:
    print("error: interrupted; nothing was written", file=sys.stderr)
    sys.exit(130)


def run(source: str, dest: str, checkpoint: str, causal: bool = False, channels: int = 2,
        keep_delay: bool = False, sample_rate: int | None = None,
        win_ms: float | None = None) -> None:
  """The streaming command: a file hop by hop, or raw f32le PCM when both paths are '-'.

  Shared by ``python -m apollo_jax.streaming`` and ``python -m apollo_jax.restore --stream``.
  """
  if source != "-":
    if os.path.exists(dest) and os.path.exists(source) and os.path.samefile(source, dest):
      raise ValueError(f"{dest} is the input; refusing to overwrite an input")
    audio.check_output_format(dest)
    with audio.Reader(source):  # a bad header fails before the checkpoint is read
      pass
  try:
    cfg, params = load_generator(checkpoint, sample_rate, win_ms)
  except CHECKPOINT_ERRORS as e:
    raise ValueError(f"checkpoint {checkpoint}: {e}") from None
  if causal:
    cfg = dataclasses.replace(cfg, causal=True)

  def announce():
    print(f"streaming: hop {cfg.hop} samples, lookahead {lookahead_frames(cfg)} frames, latency "
          f"{latency_samples(cfg)} samples = {latency_ms(cfg):.0f} ms", file=sys.stderr)

  if source == "-":
    announce()
    n = stream_stdio(cfg, params, channels, aligned=not keep_delay)
    print(f"streamed {n} samples per channel", file=sys.stderr)
  else:
    stats = stream_file(cfg, params, source, dest, announce)
    print(f"wrote {dest}: {stats['seconds']:.2f} s in {stats['hops']} hops, "
          f"{stats['wall_ms_per_hop']:.2f} ms per hop (with compilation)", file=sys.stderr)


if __name__ == "__main__":
  main()
