"""Moved to :mod:`apollo_jax.cli.restore`; kept so ``python -m apollo_jax.restore`` and
``from apollo_jax.restore import main`` keep working."""

from apollo_jax.cli.restore import build_parser, main  # noqa: F401

if __name__ == "__main__":
  raise SystemExit(main())
