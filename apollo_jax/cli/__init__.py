"""Command lines: argument parsing, progress and exit codes around the library.

- :mod:`~apollo_jax.cli.restore`: ``python -m apollo_jax.restore`` / ``apollo-restore``
  (files and folders; ``--stream`` hands over to :mod:`~apollo_jax.cli.stream`).
- :mod:`~apollo_jax.cli.stream`: ``python -m apollo_jax.streaming`` (causal, hop by hop).
- :mod:`~apollo_jax.cli.interop`: ``python -m apollo_jax.interop convert|export|compare``.

The dataset checker (``python -m apollo_jax.data.check``) and the demo corpus
(``python -m apollo_jax.data.demo``) stay beside the data code they drive.
"""
