"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest

# Before any test module can start a JAX backend: the tests then run under
# the XLA:CPU flag that metajax.xla_cpu sets for users.
import metajax  # noqa: F401

#: the real data used by CI: ../shared/data next to the repository root.
SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" /
               "data").resolve()


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
  """``../shared/data`` (skips the test when it is absent)."""
  if not (SHARED_DATA / "omniglot").is_dir():
    pytest.skip(f"real data not found at {SHARED_DATA}")
  return SHARED_DATA


@pytest.fixture(scope="session")
def omniglot_cache_dir(tmp_path_factory) -> Path:
  """A session-wide cache dir for the real Omniglot arrays."""
  return tmp_path_factory.mktemp("omniglot-cache")


@pytest.fixture(scope="session")
def real_omniglot(shared_data_dir, omniglot_cache_dir):
  """All 1623 Omniglot characters at 28x28 from the shared npz files.

  Loaded once per session into a temporary cache (skips without the files).
  """
  from metajax.data import omniglot
  npz = shared_data_dir / "omniglot" / "npz_bitsandscraps"
  if not (npz / "images_background.npz").is_file():
    pytest.skip("Omniglot npz files not found")
  return omniglot.load_omniglot(
      shared_data_dir, source="npz",
      cache_dir=omniglot_cache_dir)
