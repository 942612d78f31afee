"""metajax.xla_cpu: when the XLA:CPU flag is added, and that it takes effect."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metajax import xla_cpu

ROOT = Path(__file__).resolve().parents[1]
SETTING = f"{xla_cpu.FLAG}={xla_cpu.VALUE}"


def test_adds_the_flag_and_keeps_other_flags():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert xla_cpu.apply_defaults(env, backends_started=False) == "applied"
  assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2", SETTING]
  env = {}
  assert xla_cpu.apply_defaults(env, backends_started=False) == "applied"
  assert env["XLA_FLAGS"] == SETTING


@pytest.mark.parametrize("env,status", [
    ({xla_cpu.OPT_OUT: "0"}, "opted out"),
    ({"XLA_FLAGS": f"{xla_cpu.FLAG}=dot,reduce"}, "user setting"),
])
def test_leaves_the_environment_alone_when_asked_or_set(env, status):
  before = dict(env)
  assert xla_cpu.apply_defaults(env, backends_started=False) == status
  assert env == before


def test_too_late_once_a_backend_runs():
  env = {}
  assert xla_cpu.apply_defaults(env, backends_started=True) == "too late"
  assert "XLA_FLAGS" not in env


def test_other_jaxlib_releases_get_nothing():
  """XLA aborts on unknown flags, so only the pinned series gets it."""
  env = {}
  assert xla_cpu.apply_defaults(env, backends_started=False,
                                jaxlib_version="0.11.0") == "other jaxlib"
  assert env == {}
  assert xla_cpu._jaxlib_version().startswith(xla_cpu.JAXLIB_SERIES)


_PROBE = r'''
import json, os
import metajax, jax, jax.numpy as jnp
from jax import lax
x, w = jnp.ones((16, 14, 14, 64)), jnp.ones((3, 3, 64, 64))  # conv-4 sized
conv = jax.jit(lambda x, w: lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
hlo = conv.lower(x, w).compile().as_text()
print(json.dumps({"status": metajax.xla_cpu.STATUS,
                  "flags": os.environ.get("XLA_FLAGS", ""),
                  "library_conv": "ynn_fusion" in hlo}))
'''


def _probe(**extra):
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", xla_cpu.OPT_OUT)}
  env.update(extra, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  out = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=ROOT,
                       capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_sets_the_flag_and_xla_obeys_it():
  """In a fresh process, importing metajax moves convolutions off the YNN
  library (the flag works); opting out leaves XLA's default (YNN)."""
  on = _probe()
  assert on["status"] == "applied" and SETTING in on["flags"]
  assert not on["library_conv"]
  off = _probe(**{xla_cpu.OPT_OUT: "0"})
  assert off["status"] == "opted out" and off["flags"] == ""
  assert off["library_conv"]


@pytest.mark.parametrize("env,plugins,status", [
    ({}, ["jax-cuda12-plugin"], "other backend"),
    ({"JAX_PLATFORMS": "cuda,cpu"}, [], "other backend"),
    ({"JAX_PLATFORMS": "tpu"}, [], "other backend"),
    ({"JAX_PLATFORMS": "cpu"}, ["jax-cuda13-plugin"], "applied"),
    ({}, [], "applied"),
])
def test_the_flag_is_for_the_cpu_backend_only(env, plugins, status):
  env = dict(env)
  assert xla_cpu.apply_defaults(env, backends_started=False,
                                jaxlib_version="0.10.2",
                                plugins=plugins) == status
  assert (SETTING in env.get("XLA_FLAGS", "")) == (status == "applied")


_META_STEP = r'''
import json, os, sys
sys.path.insert(0, sys.argv[1])  # the fake distributions come first
import jax, numpy as np, optax
import metajax as mj
from metajax.models import MLP
learner = mj.MAML(MLP(hidden=(8,), num_outputs=1), inner_lr=0.01,
                  inner_steps=2, loss="mse")
rng = np.random.default_rng(0)
x = rng.normal(size=(2, 5, 1)).astype(np.float32)
tasks = mj.Task(x, np.sin(x), x, np.cos(x))
opt = optax.adam(1e-3)
state = mj.init_state(learner, opt, jax.random.PRNGKey(0),
                      jax.tree_util.tree_map(lambda a: a[0], tasks))
state, metrics = mj.make_meta_step(learner, opt)(state, tasks)
print(json.dumps({"status": mj.xla_cpu.STATUS,
                  "flags": os.environ.get("XLA_FLAGS", ""),
                  "loss": float(metrics["loss"])}))
'''


@pytest.mark.parametrize("distribution,version,status", [
    ("jax_cuda13_plugin", "0.10.2", "other backend"),  # a GPU image
    ("jaxlib", "0.11.0", "other jaxlib"),  # the GPU image's jax series
])
def test_metajax_runs_a_meta_step_without_the_flag(tmp_path, distribution,
                                                   version, status):
  """The guard's inputs as an accelerator image shows them (installed
  distributions' metadata), in a fresh process that imports metajax and
  runs a meta-step; the real backend stays the CPU."""
  info = tmp_path / f"{distribution}-{version}.dist-info"
  info.mkdir()
  (info / "METADATA").write_text(
      f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", xla_cpu.OPT_OUT, "JAX_PLATFORMS")}
  env["PYTHONPATH"] = str(ROOT)
  out = subprocess.run([sys.executable, "-c", _META_STEP, str(tmp_path)],
                       env=env, cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["status"] == status
  assert xla_cpu.FLAG not in result["flags"]
  assert np.isfinite(result["loss"])
