"""``python -m apollo_jax.interop convert|export|compare``: the checkpoint command line.

The library it drives is :mod:`apollo_jax.checkpoints` (every checkpoint format),
:mod:`apollo_jax.inference.deploy` and :mod:`apollo_jax.evaluation.nulltest`;
``apollo_jax/interop.py`` only forwards ``python -m apollo_jax.interop`` here.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys

from apollo_jax import checkpoints
from apollo_jax.cli.flags import add_checkpoint_rate_flags


def main(argv: list[str] | None = None) -> int:
  """``convert IN OUT_DIR`` / ``export IN OUT.safetensors``; exit 2 with one line on errors."""
  parser = argparse.ArgumentParser(
      prog="python -m apollo_jax.interop",
      description="Convert generator checkpoints between the published PyTorch format and ours.")
  sub = parser.add_subparsers(dest="command", required=True)
  conv = sub.add_parser("convert", help="any checkpoint -> orbax params folder + config.json")
  conv.add_argument("input", help="published .bin/.pth/.ckpt, .safetensors, or an orbax folder")
  conv.add_argument("output", help="folder to create (OUT/params, OUT/config.json)")
  exp = sub.add_parser("export", help="any checkpoint -> .safetensors with the official names, "
                                      "or a deployable StableHLO / ONNX model")
  exp.add_argument("input", help="orbax params or training folder, or any file convert reads")
  exp.add_argument("output", help="the file to write (.safetensors, .npz for stablehlo, .onnx)")
  exp.add_argument("--format", choices=["safetensors", "stablehlo", "onnx"], default="safetensors",
                   help="safetensors (weights, default), stablehlo (jax.export of the jitted "
                        "generator) or onnx (needs requirements-onnx.txt)")
  exp.add_argument("--batch", type=int, default=1, help="stablehlo/onnx: fixed batch (default 1)")
  exp.add_argument("--channels", type=int, default=2, help="stablehlo/onnx: fixed channels (default 2)")
  exp.add_argument("--samples", type=int, default=None,
                   help="stablehlo/onnx: fixed samples per channel (default 4 s at the model's rate)")
  for p in (conv, exp):
    add_checkpoint_rate_flags(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
  cmp = sub.add_parser("compare", help="null test: residual level, SNR and max difference")
  cmp.add_argument("reference", help="the published code's output (WAV/FLAC/...)")
  cmp.add_argument("ours", help="our output for the same input, same rate and length")
  args = parser.parse_args(argv)
  if args.command == "compare":
    from apollo_jax import audio
    from apollo_jax.evaluation import nulltest
    try:
      print(nulltest.compare_files(args.reference, args.ours).line())
    except (audio.AudioError, ValueError) as e:
      print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
      return 2
    return 0
  try:
    suffix = {"safetensors": ".safetensors", "stablehlo": ".npz", "onnx": ".onnx"}.get(
        getattr(args, "format", "safetensors"))
    if args.command == "export" and not args.output.endswith(suffix):
      raise ValueError(f"{args.output}: export --format {args.format} writes {suffix} files")
    if os.path.exists(args.output) and not args.overwrite:
      raise ValueError(f"{args.output} already exists (pass --overwrite to replace it)")
    if os.path.exists(args.input) and os.path.exists(args.output) and os.path.samefile(
        args.input, args.output):
      raise ValueError(f"{args.output} is the input; refusing to overwrite it")
    cfg, params = checkpoints.load_generator(args.input, args.sample_rate, args.win_ms)
    if args.command == "convert":
      checkpoints.save_generator(args.output, cfg, params, overwrite=args.overwrite)
    elif args.format == "safetensors":
      checkpoints.save_torch_generator(cfg, params, args.output)
    else:
      from apollo_jax.inference import deploy
      shape = (args.batch, args.channels, args.samples or 4 * cfg.sample_rate)
      if args.format == "stablehlo":
        deploy.export_stablehlo(cfg, params, shape, args.output)
      else:
        deploy.export_onnx(cfg, params, shape, args.output)
  except (OSError, ValueError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(f"wrote {args.output} (feature_dim={cfg.feature_dim}, num_layers={cfg.num_layers}, "
        f"sample_rate={cfg.sample_rate})")
  return 0
