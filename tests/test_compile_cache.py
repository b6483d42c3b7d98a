"""The persistent compilation cache (apollo_jax.compile_cache): a second process loads what
the first one compiled, and the environment variable turns it off."""

import json
import os
import subprocess
import sys

from tests.conftest import REPO

# Compiles one small function with the cache on and prints the cache events JAX records.
_PROGRAM = """
import json, sys
import jax, jax.numpy as jnp
from jax import monitoring
from apollo_jax import compile_cache
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
path = compile_cache.setup(sys.argv[1], min_compile_seconds=0)
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum(axis=0))
f(jnp.ones((64, 32))).block_until_ready()
print(json.dumps({"path": path, "events": [e for e in events if "compilation_cache" in e]}))
"""


def _compile(cache_dir, env_value=None):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("APOLLO_JAX_COMPILE_CACHE", None)
  if env_value is not None:
    env["APOLLO_JAX_COMPILE_CACHE"] = env_value
  out = subprocess.run([sys.executable, "-c", _PROGRAM, str(cache_dir)], capture_output=True,
                       text=True, env=env, cwd=REPO, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_from_the_cache(tmp_path):
  first = _compile(tmp_path)
  assert first["path"] == str(tmp_path)
  assert "/jax/compilation_cache/cache_misses" in first["events"]
  assert "/jax/compilation_cache/cache_hits" not in first["events"]
  entries = sorted(os.listdir(tmp_path))
  assert any(name.startswith("jit__lambda") for name in entries), entries
  second = _compile(tmp_path)
  assert "/jax/compilation_cache/cache_hits" in second["events"]
  assert "/jax/compilation_cache/cache_misses" not in second["events"]
  assert sorted(os.listdir(tmp_path)) == entries  # nothing new was compiled


def test_environment_overrides_the_folder_or_turns_the_cache_off(tmp_path):
  other = tmp_path / "other"
  moved = _compile(tmp_path / "default", env_value=str(other))
  assert moved["path"] == str(other) and os.listdir(other)
  assert not (tmp_path / "default").exists()
  off = _compile(tmp_path / "default", env_value="off")
  assert off["path"] is None
  assert not any("cache_hits" in e or "cache_misses" in e for e in off["events"])
  assert not (tmp_path / "default").exists()


def test_switching_folders_in_one_process(tmp_path, compile_cache_dir, monkeypatch):
  import jax
  import jax.numpy as jnp
  from apollo_jax import compile_cache
  monkeypatch.delenv(compile_cache.ENV)
  try:
    for name in ("a", "b"):
      assert compile_cache.setup(str(tmp_path / name), min_compile_seconds=0) == str(tmp_path / name)
      jax.jit(lambda x, n=name: jnp.cos(x) * len(n) + 1.5)(jnp.ones(7)).block_until_ready()
      assert os.listdir(tmp_path / name), f"nothing cached in folder {name}"
  finally:
    monkeypatch.undo()
    compile_cache.setup()  # back to the session's folder (from the environment)
  assert jax.config.jax_compilation_cache_dir == compile_cache_dir
