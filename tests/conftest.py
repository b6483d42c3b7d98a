"""Shared test fixtures: the parity fixture folder and small configs."""

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


def parity_dir() -> pathlib.Path:
  """Fixture folder from APOLLO_PARITY_DIR (default ../shared/parity beside the checkout)."""
  return pathlib.Path(os.environ.get("APOLLO_PARITY_DIR", REPO.parent / "shared" / "parity"))


@pytest.fixture(scope="session")
def parity():
  d = parity_dir()
  if not (d / "meta.json").exists():
    pytest.fail(f"parity fixture not found at {d} (set APOLLO_PARITY_DIR)")
  return d


@pytest.fixture(autouse=True, scope="session")
def compile_cache_dir(tmp_path_factory):
  """train.py / eval.py / restore cache compiled programs; tests keep them out of the user's
  cache folder (one folder per session, inherited by the subprocesses tests start)."""
  from apollo_jax.compile_cache import ENV
  os.environ[ENV] = str(tmp_path_factory.mktemp("compile_cache"))
  return os.environ[ENV]
