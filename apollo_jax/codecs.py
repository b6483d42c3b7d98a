"""Moved to :mod:`apollo_jax.data.codecs`; kept so code written against the old path (a branch
made before the move) still imports. Nothing in the package imports it; delete it once
no caller is left."""

from apollo_jax.data.codecs import *  # noqa: F401,F403
