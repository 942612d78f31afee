"""The run record: versions, devices, machine and the checkout's commit."""
from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess

import jax
import pytest

from metajax.experiment import record

REPO = pathlib.Path(__file__).resolve().parents[2]


def _is_checkout() -> bool:
  if shutil.which("git") is None:
    return False
  return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"],
                        capture_output=True, check=False).returncode == 0


def test_run_info_keys_and_values():
  info = record.run_info(seed=3, started=1_700_000_000.0, finished=1_700_000_012.5)
  assert {"seed", "started", "finished", "wall_time_s", "jax", "jaxlib",
          "backend", "device_kinds", "device_count", "python", "machine",
          "git", "timestamp"} <= set(info)
  assert info["seed"] == 3 and info["wall_time_s"] == 12.5
  assert info["started"] == "2023-11-14T22:13:20+00:00"
  assert info["jax"] == jax.__version__
  assert info["backend"] == jax.default_backend()
  assert info["device_count"] == len(info["device_kinds"]) == jax.device_count()
  assert info["timestamp"].endswith("+00:00")
  assert "cpu_count" in info["machine"]
  json.dumps(info, allow_nan=False)  # the record is strict JSON as it is


@pytest.mark.skipif(not _is_checkout(), reason="not run from a git checkout")
def test_git_commit_of_this_checkout():
  git = record.git_info()
  assert re.fullmatch(r"[0-9a-f]{40}", git["commit"]), git
  assert isinstance(git["dirty"], bool)
  head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"],
                        capture_output=True, text=True, check=True).stdout.strip()
  assert git["commit"] == head


def test_not_a_checkout_gives_null_commit_with_reason(tmp_path):
  git = record.git_info(tmp_path)
  assert git["commit"] is None and git["dirty"] is None
  assert git["reason"]


def test_no_git_binary(monkeypatch):
  monkeypatch.setenv("PATH", "")
  git = record.git_info()
  assert git["commit"] is None and "not installed" in git["reason"]
