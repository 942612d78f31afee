"""The persistent compilation cache: flag and env var, and a second run that
compiles nothing new (in subprocesses, so the suite's own cache stays off)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from metajax.experiment import runtime

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_cache_dir_from_flag_then_env(monkeypatch, tmp_path):
  monkeypatch.delenv(runtime.CACHE_ENV, raising=False)
  assert runtime.compile_cache_dir(None) is None
  monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "env"))
  assert runtime.compile_cache_dir(None) == tmp_path / "env"
  assert runtime.compile_cache_dir(tmp_path / "flag") == tmp_path / "flag"
  monkeypatch.setenv(runtime.CACHE_ENV, "")
  assert runtime.compile_cache_dir(None) is None


def test_distributed_env_must_be_integers(monkeypatch):
  monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be an integer"):
    runtime.initialize_distributed()


@pytest.mark.slow
def test_second_run_loads_every_compiled_program(tmp_path):
  cache = tmp_path / "cache"
  env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
  env.pop(runtime.CACHE_ENV, None)

  def run(name, *flags, **extra_env):
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.sinusoid", "--config", "tiny",
         "--no-progress", "--workdir", str(tmp_path / name), *flags],
        cwd=ROOT, env=dict(env, **extra_env), capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / name / "results.json").read_text())

  first = run("first", "--compile-cache", str(cache))
  entries = sorted(p.name for p in cache.iterdir())
  assert entries  # every program was written
  second = run("second", **{runtime.CACHE_ENV: str(cache)})
  assert sorted(p.name for p in cache.iterdir()) == entries  # all hits
  for name in ("maml", "pretrained"):
    assert (first["methods"][name]["eval"] == second["methods"][name]["eval"])
