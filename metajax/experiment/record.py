"""The run record: what produced a result (code, libraries, machine, time).

Stored in ``results.json`` next to the numbers, so a result can be traced to
the commit of the checkout that ran it (and whether that checkout had local
changes) and compared only with results from the same kind of device.
"""
from __future__ import annotations

import datetime
import os
import pathlib
import subprocess
import sys

from metajax.experiment import machine


def _utc(t: float) -> str:
  return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(
      timespec="seconds")


def _git(root: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
  # GIT_OPTIONAL_LOCKS=0: `git status` must not take index.lock while other
  # git commands run in the same checkout.
  env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")
  return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                        text=True, timeout=30, env=env, check=False)


def git_info(root=None) -> dict:
  """``{"commit", "dirty"}`` of the checkout that holds the metajax package.

  Args:
    root: the folder to ask; defaults to the parent of the ``metajax``
      package, which must be tracked there (a copy installed into a
      virtualenv inside some other repository is not that repository's code).

  Returns:
    ``{"commit": <40 hex>, "dirty": bool}``, where ``dirty`` means ``git
    status --porcelain`` lists changed or untracked files; or
    ``{"commit": None, "dirty": None, "reason": ...}`` without git or a
    checkout.
  """
  package = pathlib.Path(__file__).resolve().parents[1]
  root = package.parent if root is None else pathlib.Path(root)
  try:
    head = _git(root, "rev-parse", "HEAD")
    if head.returncode != 0:
      return _no_commit(head.stderr.strip() or "git rev-parse HEAD failed")
    if root == package.parent:
      tracked = _git(root, "ls-files", "--error-unmatch",
                     f"{package.name}/__init__.py")
      if tracked.returncode != 0:
        return _no_commit(f"{package} is not tracked by the git checkout at "
                          f"{root}")
    status = _git(root, "status", "--porcelain")
    if status.returncode != 0:
      return _no_commit(status.stderr.strip() or "git status failed")
  except FileNotFoundError:
    return _no_commit("git is not installed")
  except (OSError, subprocess.SubprocessError) as e:
    return _no_commit(f"git failed: {e}")
  return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def _no_commit(reason: str) -> dict:
  return {"commit": None, "dirty": None, "reason": reason}


def run_info(*, seed, started: float, finished: float, devices=None) -> dict:
  """The record of one run, for its ``results.json``.

  Args:
    seed: the run's seed (any JSON-able value).
    started: ``time.time()`` when the run started.
    finished: ``time.time()`` when it finished.
    devices: the ``devices=`` the meta-steps were sharded over (``None``:
      one device), recorded as ``meta_step_devices``
      (:func:`metajax.core.sharding.describe`).

  Returns:
    Seed, start and finish (UTC ISO 8601) and wall time in seconds; jax and
    jaxlib versions, the default backend, device kinds and count; the Python
    version; :func:`machine.describe`; the git commit (see :func:`git_info`);
    and ``timestamp``, when the record was made (UTC ISO 8601).
  """
  import jax
  import jaxlib

  from metajax.core import sharding
  meta_step_devices, devices = devices, jax.devices()
  return {
      "seed": seed,
      "started": _utc(started),
      "finished": _utc(finished),
      "wall_time_s": round(float(finished) - float(started), 3),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "backend": jax.default_backend(),
      "device_kinds": [d.device_kind for d in devices],
      "device_count": len(devices),
      "meta_step_devices": sharding.describe(meta_step_devices),
      "python": sys.version.split()[0],
      "machine": machine.describe(),
      "git": git_info(),
      "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
  }
