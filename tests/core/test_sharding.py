"""Tasks sharded over 8 forced host devices equal the one-device meta-step.

The comparisons run in a subprocess started with
``--xla_force_host_platform_device_count=8``, so the rest of the suite keeps
one device. Float64 throughout: the only difference allowed is the order of
the sum over tasks.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

import metajax as mj
from metajax.core import sharding

ROOT = pathlib.Path(__file__).resolve().parents[2]

_SCRIPT = r"""
import json, sys, tempfile
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, numpy as np, optax
import metajax as mj
from metajax.models import MLP, Conv4
from tests.helpers import image_tasks, regression_tasks, first, rel_err

assert len(jax.devices()) == 8, jax.devices()
opt = optax.adam(1e-2)

def f64(tree):
  return jax.tree_util.tree_map(
      lambda a: a.astype(jnp.float64)
      if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)

def run(learner, tasks, devices, task_map, steps=3, chunk_size=2):
  state = mj.init_state(learner, opt, jax.random.PRNGKey(0), first(tasks))
  params = f64(state.params)
  state = state._replace(params=params, opt_state=opt.init(params),
                         model_state=f64(state.model_state))
  step = mj.make_meta_step(learner, opt, task_map=task_map,
                           chunk_size=chunk_size, devices=devices)
  losses = []
  for _ in range(steps):
    state, metrics = step(state, tasks)
    losses.append(float(metrics["loss"]))
  return state, losses

images = image_tasks(jax.random.PRNGKey(0), num_tasks=8, size=8)
curves = regression_tasks(jax.random.PRNGKey(1), num_tasks=8)
learners = {
  "maml_conv": (mj.MAML(Conv4(3, filters=3, blocks=2), loss="cross_entropy",
                        inner_steps=2, inner_lr=0.4), images, "map"),
  "protonet_running_stats": (mj.ProtoNet(Conv4(num_outputs=None, filters=3,
                                               blocks=2, norm="running")),
                             images, "vmap"),
  "reptile_persistent": (mj.make("reptile", MLP((8,), 1), loss="mse",
                                 inner_steps=3, persistent_inner_state=True),
                         curves, "loop"),
  "mamlpp_schedule": (mj.make("mamlpp", MLP((8,), 1), loss="mse",
                              inner_steps=2), curves, "vmap"),
}
out = {}
for name, (learner, tasks, task_map) in learners.items():
  ref, ref_losses = run(learner, tasks, None, task_map)
  # every device count on the cheap MLP; 8 devices on the rest
  for devices in ((2, 4, 8) if name == "mamlpp_schedule" else (8,)):
    got, losses = run(learner, tasks, devices, task_map)
    leaves = jax.tree_util.tree_leaves(got)
    out[f"{name}/{devices}"] = {
        "state": rel_err((got.params, got.opt_state, got.model_state),
                         (ref.params, ref.opt_state, ref.model_state)),
        "loss": max(abs(a - b) for a, b in zip(losses, ref_losses)),
        "devices": len(leaves[0].sharding.device_set),
        "step": int(got.step)}

# two tasks on two devices: both orders add the same two numbers, so only
# how XLA compiles the smaller per-device program can differ
two = jax.tree_util.tree_map(lambda a: a[:2], curves)
mlp2 = mj.MAML(MLP((8,), 1), loss="mse", inner_steps=2, inner_lr=0.05)
out["two_tasks"] = {}
for task_map in ("vmap", "map", "loop"):
  ref, _ = run(mlp2, two, None, task_map, chunk_size=None)
  got, _ = run(mlp2, two, 2, task_map, chunk_size=None)
  out["two_tasks"][task_map] = rel_err((got.params, got.opt_state),
                                       (ref.params, ref.opt_state))

# fit: the history and the returned state; the state comes back to one device
mlp = mj.MAML(MLP((8,), 1), loss="mse", inner_steps=2, inner_lr=0.05)
sample = lambda rng: regression_tasks(rng, num_tasks=8)
start = mj.init_state(mlp, opt, jax.random.PRNGKey(0), first(sample(
    jax.random.PRNGKey(0))))
start = start._replace(params=f64(start.params),
                       opt_state=opt.init(f64(start.params)))
fits = {}
for devices in (None, 8):
  with tempfile.TemporaryDirectory() as d:
    state, hist = mj.fit(mlp, opt, sample, num_steps=6, steps_per_call=2,
                         checkpoint_dir=d, checkpoint_every=4, progress=False,
                         devices=devices, state=start)
  fits[devices] = (state, hist)
out["fit_loss"] = float(np.max(np.abs(fits[8][1]["loss"] - fits[None][1]["loss"])))
out["fit_state"] = rel_err(fits[8][0].params, fits[None][0].params)
out["fit_state_devices"] = len(
    jax.tree_util.tree_leaves(fits[8][0].params)[0].sharding.device_set)
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def sharded_results():
  env = dict(os.environ, PYTHONPATH=str(ROOT),
             XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
  return json.loads(line[len("RESULT"):])


@pytest.mark.parametrize("name, devices", [
    ("maml_conv", 8), ("protonet_running_stats", 8), ("reptile_persistent", 8),
    ("mamlpp_schedule", 2), ("mamlpp_schedule", 4), ("mamlpp_schedule", 8)])
def test_sharded_meta_step_equals_one_device(sharded_results, name, devices):
  r = sharded_results[f"{name}/{devices}"]
  assert r["state"] < 1e-13, r  # params, Adam moments, running state
  assert r["loss"] < 1e-13, r
  assert r["devices"] == devices  # the state really lives on the mesh
  assert r["step"] == 3


def test_two_tasks_on_two_devices_agree_to_rounding(sharded_results):
  # not bit-identical in general: measured 0 or a few ulps, data-dependent
  for task_map, err in sharded_results["two_tasks"].items():
    assert err < 1e-15, (task_map, err)


def test_fit_with_devices_equals_fit_without(sharded_results):
  assert sharded_results["fit_loss"] < 1e-12
  assert sharded_results["fit_state"] < 1e-12
  assert sharded_results["fit_state_devices"] == 1  # back on one device


def test_bad_devices_named():
  with pytest.raises(ValueError, match="only 1 cpu device"):
    sharding.resolve_devices(2)
  for bad in (0, -1, True, "some", []):
    with pytest.raises(ValueError, match="devices"):
      sharding.resolve_devices(bad)
  assert sharding.resolve_devices(None) is None
  assert sharding.resolve_devices(1) is None
  assert sharding.task_mesh("all") is None  # one device: no mesh


def test_meta_batch_must_split_evenly():
  import jax
  mesh = jax.sharding.Mesh(jax.devices() * 1, (sharding.AXIS,))
  sharding.check_divisible(5, mesh)  # one device: anything splits
  fake = type("FakeMesh", (), {"size": 4})()
  with pytest.raises(ValueError, match="6 tasks does not split evenly over 4"):
    sharding.check_divisible(6, fake)


def test_describe_one_device():
  d = sharding.describe(None)
  assert d["devices"] == 1 and d["processes"] == 1
  assert d["platform"] == mj.core.sharding.jax.devices()[0].platform
