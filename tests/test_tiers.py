"""The test tiers: a clone without the parity fixture runs everything else (conftest)."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _pytest(tmp_path, *args):
  env = {**os.environ, "APOLLO_PARITY_DIR": str(tmp_path / "absent")}
  return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # a second pytest process (imports JAX, compiles)
def test_without_the_parity_fixture_its_users_are_skipped_with_the_reason(tmp_path):
  # test_losses.py: one test uses the `parity` fixture (with no mark of its own), four do not.
  r = _pytest(tmp_path, "-rs", "-m", "", "tests/test_losses.py")  # both tiers
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  assert "4 passed, 1 skipped" in r.stdout, r.stdout[-3000:]
  assert f"parity fixture not found at {tmp_path / 'absent'}" in r.stdout
  # Marked by conftest, so -m can leave it out.
  r = _pytest(tmp_path, "--collect-only", "-q", "-m", "not parity", "tests/test_losses.py")
  assert r.returncode == 0 and "4/5 tests collected (1 deselected)" in r.stdout, r.stdout[-3000:]
