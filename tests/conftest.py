"""Shared fixtures: where the real MNIST-family IDX files live.

One setting, BNNJAX_DATA_DIR. The library has no default of its own: the test
configuration sets it here (to ../shared/data beside the checkout unless it is already
set), for this process and the scripts and tutorials the tests start. Where the folder is
absent the tests that need it skip, except under CI=true, where a missing folder fails
them: CI can never pass by skipping.
"""

import os
import pathlib
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("BNNJAX_DATA_DIR", REPO.parent / "shared" / "data"))
if SHARED_DATA.is_dir():
  os.environ["BNNJAX_DATA_DIR"] = str(SHARED_DATA)

# JAX's persistent compilation cache, one fresh folder per test run, set before anything imports
# jax: the xdist workers and the scripts and tutorials the tests start inherit it from the
# process that loads this file first. Many tests train or resume the same programs, and a
# Bayesian step compiles for seconds on CPU. An environment that sets JAX_COMPILATION_CACHE_DIR
# itself keeps its own.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = os.path.join(tempfile.gettempdir(), f"bnnjax-test-jax-cache-{os.getpid()}")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE
  # A size bound turns on the cache's file lock: two workers never read an entry half written.
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))


@pytest.fixture(scope="session")
def shared_data_dir() -> pathlib.Path:
  """The folder holding mnist/, fashion-mnist/ and kmnist/ IDX files."""
  if not (SHARED_DATA / "mnist").is_dir():
    message = (
      f"real data not found at {SHARED_DATA} "
      "(set BNNJAX_DATA_DIR to a folder holding mnist/, fashion-mnist/, kmnist/)"
    )
    if os.environ.get("CI", "").lower() == "true":
      pytest.fail(message + "; CI=true forbids skipping")
    pytest.skip(message)
  return SHARED_DATA


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: a training check; CI runs it on a short budget")


@pytest.fixture(scope="session")
def uci_data_dir() -> pathlib.Path:
  """The folder holding the UCI regression sets (uci/concrete/, uci/energy/, ...)."""
  if not (SHARED_DATA / "uci" / "concrete").is_dir():
    message = f"UCI data not found at {SHARED_DATA / 'uci'} (set BNNJAX_DATA_DIR to a folder holding uci/)"
    if os.environ.get("CI", "").lower() == "true":
      pytest.fail(message + "; CI=true forbids skipping")
    pytest.skip(message)
  return SHARED_DATA
