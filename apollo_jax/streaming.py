"""Moved: the algorithm to :mod:`apollo_jax.inference.streaming`, the command line to
:mod:`apollo_jax.cli.stream`; kept so ``python -m apollo_jax.streaming`` keeps working."""

if __name__ == "__main__":
  from apollo_jax.cli.stream import main
  main()
