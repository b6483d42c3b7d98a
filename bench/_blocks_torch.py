"""The published band transformer and TCN unit, and torch's attention, timed in torch: the
other side of bench/blocks.py.

Run with the torch venv's python; the modules are imported from the published checkout
(``--ref-dir``) by ``../shared/refbench/_apollo_ref.py``, nothing of them is copied. Their
inputs are laid out as the published BSNet lays out the block input (streams, frames, bands,
features): ``(streams * frames, features, bands)`` for the band transformer and
``(streams * bands, features, frames)`` for a TCN unit; the attention's queries, keys and
values as the published ``Roformer`` hands them to ``scaled_dot_product_attention``,
``(streams * frames, heads, bands, head_dim)`` each. Prints one JSON line: a list of
``{"part", "mode", "median_s"}``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "refbench"))
import _apollo_ref  # noqa: E402


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__)
  p.add_argument("--ref-dir", required=True)
  for name in ("streams", "frames", "bands", "features", "heads", "kernel"):
    p.add_argument(f"--{name}", type=int, required=True)
  p.add_argument("--runs", type=int, default=3)
  p.add_argument("--threads", type=int, default=2)
  args = p.parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  apollo = _apollo_ref.load_ref(args.ref_dir).modules["apollo"]
  f = args.features
  qkv_shape = (args.streams * args.frames, args.heads, args.bands, f // args.heads)
  parts = {
      "band transformer": (apollo.Roformer(f, f, num_head=args.heads, window=100, causal=False),
                           [(args.streams * args.frames, f, args.bands)]),
      "attention": (F.scaled_dot_product_attention, [qkv_shape] * 3),
      "TCN unit": (apollo.ConvActNorm1d(f, 4 * f, args.kernel), [(args.streams * args.bands, f, args.frames)]),
  }
  rows = []
  for part, (module, shapes) in parts.items():
    xs = [torch.randn(*shape, requires_grad=True) for shape in shapes]

    def forward():
      with torch.no_grad():
        module(*xs)

    def gradients():
      if isinstance(module, torch.nn.Module):
        module.zero_grad()
      for x in xs:
        x.grad = None
      y = module(*xs)
      y = y[0] if isinstance(y, tuple) else y  # the Roformer also returns its keys and values
      y.backward(y.detach())

    for mode, fn in (("forward", forward), ("forward+backward", gradients)):
      fn()
      times = []
      for _ in range(args.runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
      rows.append({"part": part, "mode": mode, "median_s": statistics.median(times)})
  print(json.dumps(rows))


if __name__ == "__main__":
  main()
