"""Runs a generator exported with ``interop export --format stablehlo``; needs only jax + numpy.

  python scripts/run_stablehlo.py apollo.hlo.npz in.npy out.npy

``in.npy`` is float32 (batch, channels, samples) of exactly the exported shape, at the
exported sample rate; ``out.npy`` gets the restored audio, same shape.
"""

import sys

import jax
import numpy as np


def main(model: str, source: str, dest: str) -> None:
  z = np.load(model)
  exported = jax.export.deserialize(bytearray(z["exported"]))
  params = tuple(z[f"param_{i}"] for i in range(int(z["num_params"])))
  x = np.load(source).astype(np.float32)
  if x.shape != tuple(z["shape"]):
    sys.exit(f"error: {source} is {x.shape}; this export takes {tuple(int(v) for v in z['shape'])}")
  np.save(dest, np.asarray(exported.call(params, x)))


if __name__ == "__main__":
  if len(sys.argv) != 4:
    sys.exit(__doc__)
  main(*sys.argv[1:])
