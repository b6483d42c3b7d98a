"""Shared test fixtures: the parity fixture folder, the test tiers and the small configs.

Tiers: ``pytest`` runs the fast tier (pyproject's addopts deselect ``slow``: every test
over ~5 s); ``pytest -m slow`` the rest. A test that uses the ``parity`` fixture is marked
``parity`` here, and skipped with the reason when the fixture folder is absent, so a clone
without ``../shared`` runs everything else.
"""

import os
import pathlib

import pytest

from apollo_jax import ApolloConfig, xla_options

# The scripts' XLA options, before any test starts JAX's backend: the tests compile and
# compute what train.py, eval.py and restore do (and compile faster).
xla_options.use_compile_options()

REPO = pathlib.Path(__file__).resolve().parent.parent

# The small generator most tests build: 79 bands of 16 features, one block, 2 heads.
TINY = ApolloConfig(feature_dim=16, num_layers=1, num_heads=2)
# Discriminator STFT windows for tests (the paper's are 2048 and up). Two sub-discriminators
# keep the sums over several; each one more costs about a third more train-step compile time.
TINY_WINDOWS = (32, 64)


def parity_dir() -> pathlib.Path:
  """Fixture folder from APOLLO_PARITY_DIR (default ../shared/parity beside the checkout)."""
  return pathlib.Path(os.environ.get("APOLLO_PARITY_DIR", REPO.parent / "shared" / "parity"))


def parity_missing() -> str | None:
  """Why the parity tests cannot run, or None when the fixture is there."""
  d = parity_dir()
  return None if (d / "meta.json").exists() else f"parity fixture not found at {d} (set APOLLO_PARITY_DIR)"


@pytest.hookimpl(tryfirst=True)  # before -m selects on the marks added here
def pytest_collection_modifyitems(config, items):
  missing = parity_missing()
  for item in items:
    if "parity" in getattr(item, "fixturenames", ()):
      item.add_marker(pytest.mark.parity)
    if missing and item.get_closest_marker("parity"):
      item.add_marker(pytest.mark.skip(reason=missing))


@pytest.fixture(scope="session")
def parity():
  if missing := parity_missing():
    pytest.skip(missing)
  return parity_dir()


@pytest.fixture(autouse=True, scope="session")
def compile_cache_dir(tmp_path_factory):
  """train.py / eval.py / restore cache compiled programs; tests keep them out of the user's
  cache folder (one folder per session, inherited by the subprocesses tests start).

  The tests' own process uses it too: many tests compile the same program again through a
  new function object (``init_params`` and ``create_train_state`` jit a fresh lambda per
  call, each test builds its own train step), which JAX's in-memory cache misses and this
  folder does not."""
  from apollo_jax import compile_cache
  os.environ[compile_cache.ENV] = str(tmp_path_factory.mktemp("compile_cache"))
  compile_cache.setup()
  return os.environ[compile_cache.ENV]


@pytest.fixture(scope="module")
def params():
  """Random parameters of the TINY generator (the restore and hardening tests' model)."""
  from fakes import random_params
  return random_params(TINY, seed=1)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, params):
  """``params`` written as a published-style safetensors checkpoint."""
  from apollo_jax.checkpoints.published import save_torch_generator
  path = str(tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")
  save_torch_generator(TINY, params, path)
  return path
