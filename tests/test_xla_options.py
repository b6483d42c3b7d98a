"""XLA options set through XLA_FLAGS (apollo_jax.xla_options): the user's flags are kept,
their own choice wins, and the scripts set them before JAX starts. The rest of the suite runs
with them (conftest), the parity tests included, so XLA accepts them and the values hold."""

import os
import subprocess
import sys

import pytest

from apollo_jax import xla_options
from tests.conftest import REPO

OPTION = f"{xla_options.FLAG}={','.join(xla_options.CPU_EXTRA_OPTIONS)}"


def test_added_to_the_users_flags():
  assert xla_options.with_compile_options("") == OPTION
  assert (xla_options.with_compile_options("--xla_force_host_platform_device_count=8")
          == f"--xla_force_host_platform_device_count=8 {OPTION}")


@pytest.mark.parametrize("flags", [f"{xla_options.FLAG}=", f"-v {xla_options.FLAG}=xla_cpu_x=1"])
def test_the_users_own_extra_options_win(flags):
  assert xla_options.with_compile_options(flags) == flags


def test_sets_this_processes_environment(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
  xla_options.use_compile_options()
  assert os.environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {OPTION}"


@pytest.mark.slow  # a fresh process imports the scripts and their libraries
def test_the_scripts_set_it_before_jax_starts():
  """XLA reads XLA_FLAGS once, when JAX starts its backend: importing the scripts (train.py,
  eval.py, the restore CLI) must not start it, or their call would change nothing."""
  program = ("import sys; sys.argv = ['x']; import train, eval, apollo_jax.cli.restore; "
             "from jax._src import xla_bridge; print(xla_bridge.backends_are_initialized())")
  out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, cwd=REPO, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.split()[-1] == "False"
