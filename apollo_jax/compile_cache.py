"""JAX's persistent compilation cache, shared by train.py, eval.py and the restore CLI.

Compiling the training step takes minutes on CPU; with the cache, a relaunch or resume of
the same run (same program, shapes, jax version and machine) loads the compiled executable
from disk instead. ``APOLLO_JAX_COMPILE_CACHE`` overrides the folder (a path) or turns the
cache off (``off``, ``0``, ``false``, ``no``).

Like any JAX compilation cache, the folder is trusted: an executable put there by someone
else would be run, so never point it at a folder others can write to.
"""

from __future__ import annotations

import logging
import os

ENV = "APOLLO_JAX_COMPILE_CACHE"
_OFF = ("off", "0", "false", "no", "none")
# Sub-second compiles are not worth a disk read and would fill the folder with entries.
MIN_COMPILE_SECONDS = 1.0
log = logging.getLogger(__name__)


def user_cache_dir() -> str:
  """``$XDG_CACHE_HOME/apollo_jax/compile`` (default ``~/.cache/apollo_jax/compile``)."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(root, "apollo_jax", "compile")


def setup(default_dir: str | None = None,
          min_compile_seconds: float = MIN_COMPILE_SECONDS) -> str | None:
  """Turns on the persistent compilation cache; call before the first compile.

  Args:
    default_dir: the folder when ``$APOLLO_JAX_COMPILE_CACHE`` is unset; None means
      :func:`user_cache_dir`.
    min_compile_seconds: only computations that took at least this long to compile are
      written (the training step takes tens of seconds on CPU; 0 writes everything).

  Returns:
    The cache folder, or None when ``$APOLLO_JAX_COMPILE_CACHE`` turns the cache off.
  """
  import jax
  from jax.experimental.compilation_cache import compilation_cache

  env = os.environ.get(ENV, "").strip()
  if env.lower() in _OFF:
    # Also off when the user set JAX's own JAX_COMPILATION_CACHE_DIR: "off" means off.
    jax.config.update("jax_enable_compilation_cache", False)
    return None
  path = os.path.abspath(os.path.expanduser(env or default_dir or user_cache_dir()))
  os.makedirs(path, exist_ok=True)
  changed = (jax.config.jax_compilation_cache_dir not in (None, path)
             or not jax.config.jax_enable_compilation_cache)
  jax.config.update("jax_enable_compilation_cache", True)
  jax.config.update("jax_compilation_cache_dir", path)
  if changed:
    # JAX opens the cache (or decides it is off) once per process: start it afresh.
    compilation_cache.reset_cache()
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
  # -1: no minimum entry size (0 would let JAX pick a filesystem-dependent one).
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  log.info("compilation cache: %s", path)
  return path
