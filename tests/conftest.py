"""Shared pytest fixtures and what the ``data`` and ``slow`` markers mean.

Both markers are declared in ``pyproject.toml``; this file gives them their
behaviour:

* ``data``: added automatically to every test that uses one of
  :data:`DATA_FIXTURES`, so ``pytest -m "not data"`` runs the suite without
  the real data. Without its files such a test skips locally, but *fails*
  when ``CI=true``: a CI run whose data went missing must not go green on
  skipped tests.
* ``slow``: a label only. Slow tests run by default, because CI runs the
  README's plain ``python -m pytest -q`` and must run them; deselect them
  locally with ``-m "not slow"``.

Test files are spread over pytest-xdist workers (``-n auto --dist loadfile``
in ``pyproject.toml``; :func:`pytest_xdist_auto_num_workers` picks the
count), so a file's module fixtures are built once.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before any test module can start a JAX backend: the tests then run under
# the XLA:CPU flag that metajax.xla_cpu sets for users.
import metajax  # noqa: F401

# The persistent compilation cache stays off unless a test is about it.
os.environ.pop("METAJAX_COMPILE_CACHE", None)

#: the real data's default place: ../shared/data next to the repository root.
DEFAULT_SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" /
                       "data").resolve()

#: fixtures that read the real data; their tests get the ``data`` marker.
DATA_FIXTURES = frozenset({"shared_data_dir", "real_omniglot"})


def shared_data_root() -> Path:
  """``$METAJAX_DATA_DIR`` if set (as the loaders read it), else the default."""
  env = os.environ.get("METAJAX_DATA_DIR", "").strip()
  return Path(env).expanduser().resolve() if env else DEFAULT_SHARED_DATA


def in_ci() -> bool:
  """``CI=true``, as GitHub Actions, GitLab CI and most others set it."""
  return os.environ.get("CI", "").strip().lower() == "true"


def require_data(missing: list[Path], what: str) -> None:
  """Skips (locally) or fails (``CI=true``) when real data files are missing."""
  if not missing:
    return
  paths = ", ".join(str(p) for p in missing)
  msg = (f"{what} not found: missing {paths}. Point METAJAX_DATA_DIR at the "
         f"data root (default {DEFAULT_SHARED_DATA}).")
  if in_ci():
    pytest.fail(f"CI=true and {msg}", pytrace=False)
  pytest.skip(msg)


#: at most this many pytest-xdist workers (``-n auto`` in pyproject.toml):
#: every worker is a JAX process whose XLA also uses every core.
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
  """``-n auto``: one worker per core this process may use, at most
  :data:`MAX_WORKERS` (2 on the 2-core CI machine)."""
  del config
  cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else os.cpu_count() or 1)
  return max(1, min(MAX_WORKERS, cores))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  # tryfirst: the marker must be on the items before ``-m`` deselects them.
  for item in items:
    if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
  """The real data root (:func:`shared_data_root`) holding ``omniglot/``."""
  root = shared_data_root()
  require_data([] if (root / "omniglot").is_dir() else [root / "omniglot"],
               "real data")
  return root


@pytest.fixture(scope="session")
def omniglot_cache_dir(tmp_path_factory) -> Path:
  """A session-wide cache dir for the real Omniglot arrays."""
  return tmp_path_factory.mktemp("omniglot-cache")


@pytest.fixture(scope="session")
def real_omniglot(shared_data_dir, omniglot_cache_dir):
  """All 1623 Omniglot characters at 28x28 from the shared npz files.

  Loaded once per session into a temporary cache.
  """
  from metajax.data import omniglot
  found = omniglot.find_sources(shared_data_dir)
  npz = found["root"] / "npz_bitsandscraps"
  missing = [npz / f"images_{s}.npz" for s in ("background", "evaluation")
             if s not in found["npz"]]
  if found["index"] is None:
    missing.append(found["root"] / "omniglot_index.csv")
  require_data(missing, "Omniglot npz files")
  return omniglot.load_omniglot(
      shared_data_dir, source="npz",
      cache_dir=omniglot_cache_dir)
