"""glibc malloc knobs of apollo_jax.data.heap: the huge-page restart of the scripts."""

import os
import subprocess
import sys

import pytest

from apollo_jax.data import heap


def test_huge_pages_env_keeps_other_tunables_and_respects_the_users_choice():
  env = heap.huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "b"})
  if env is None:
    pytest.skip("not glibc >= 2.35 with transparent huge pages")
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert env["A"] == "b"
  assert heap.huge_pages_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) is None  # opt-out
  assert heap.huge_pages_env(env) is None  # never twice
  assert heap.env_before_restart(env) == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "b"}
  assert heap.env_before_restart(heap.huge_pages_env({})) == {}


def test_restart_keeps_the_arguments_and_sets_the_tunable():
  code = ("import os, sys; from apollo_jax.data import heap; heap.restart_with_huge_pages(); "
          "print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:])")
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  out = subprocess.run([sys.executable, "-c", code, "x", "--y"], capture_output=True, text=True,
                       env=env, check=True).stdout
  expected = "glibc.malloc.hugetlb=1" if heap.huge_pages_env(env) else "None"
  assert out.strip() == f"{expected} ['x', '--y']"


@pytest.mark.parametrize("script", ["train.py", "eval.py"])
def test_scripts_restart_before_importing_jax(script):
  # The restart replaces the process (same sys.orig_argv, so -X importtime stays on): jax
  # imported before it would be imported twice, ~2 s per launch.
  root = os.path.join(os.path.dirname(__file__), "..")
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  err = subprocess.run([sys.executable, "-X", "importtime", script, "--help"], cwd=root, env=env,
                       capture_output=True, text=True).stderr  # absl's --help exits 1
  assert sum(line.split("|")[-1].strip() == "jax" for line in err.splitlines()) <= 1
