"""Writes the held-out evaluation set (see ``apollo_jax/data/heldout.py``).

  python scripts/make_heldout.py OUT_DIR [--clips 16] [--seconds 6] [--freepats auto|yes|no]
"""

from apollo_jax.data import heldout

if __name__ == "__main__":
  heldout.main()
