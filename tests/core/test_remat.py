"""Every rematerialisation schedule gives the plain meta-gradient (float64),
and the compiled program's scratch memory stops growing with inner steps."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metajax as mj
from metajax.core import remat as remat_lib
from metajax.core.remat import Remat
from metajax.models import MLP, Conv4
from tests.helpers import first, image_tasks, regression_tasks, rel_err, to64

SCHEDULES = [True, "sqrt", "every:2", "conv", Remat(3, "conv"),
             Remat("sqrt", "dots")]


@pytest.mark.parametrize("unroll", [True, False])
def test_schedules_equal_plain_mlp(unroll):
  with jax.enable_x64(True):
    tasks = regression_tasks(jax.random.PRNGKey(0), num_tasks=2)
    kw = dict(loss="mse", inner_steps=5, inner_lr=0.1, unroll=unroll)
    plain = mj.MAML(MLP((8, 8), 1), **kw)
    params = to64(plain.init(jax.random.PRNGKey(1), first(tasks)))
    ref = jax.jit(lambda p: plain.meta_grad(p, tasks))(params)
    for schedule in SCHEDULES:
      learner = mj.MAML(MLP((8, 8), 1), remat=schedule, **kw)
      got = jax.jit(lambda p: learner.meta_grad(p, tasks))(params)
      assert rel_err(got[1], ref[1]) < 1e-12, schedule
      assert abs(float(got[0][0]) - float(ref[0][0])) < 1e-12, schedule


def test_conv_policy_on_conv4_equals_plain():
  # the policy keeps the named convolution outputs of metajax.models.ops
  with jax.enable_x64(True):
    tasks = image_tasks(jax.random.PRNGKey(0), num_tasks=2, size=8)
    kw = dict(loss="cross_entropy", inner_steps=3, inner_lr=0.3,
              unroll=False)
    model = Conv4(3, filters=3, blocks=2)
    plain = mj.MAML(model, **kw)
    params = to64(plain.init(jax.random.PRNGKey(1), first(tasks)))
    ref = jax.jit(lambda p: plain.meta_grad(p, tasks, task_map="map"))(params)
    learner = mj.MAML(model, remat=Remat(2, "conv"), **kw)
    got = jax.jit(lambda p: learner.meta_grad(p, tasks, task_map="map"))(
        params)
    assert rel_err(got[1], ref[1]) < 1e-12


def test_trajectory_with_segments_equals_plain():
  # MAML++'s multi-step loss reads every step's parameters.
  with jax.enable_x64(True):
    tasks = regression_tasks(jax.random.PRNGKey(2), num_tasks=2)
    kw = dict(loss="mse", inner_steps=5)
    plain = mj.make("mamlpp", MLP((8,), 1), **kw)
    params = to64(plain.init(jax.random.PRNGKey(3), first(tasks)))
    ref = jax.jit(lambda p: plain.meta_grad(p, tasks))(params)
    for schedule in ("sqrt", "every:2", Remat(2, "dots")):
      learner = mj.make("mamlpp", MLP((8,), 1), remat=schedule, **kw)
      got = jax.jit(lambda p: learner.meta_grad(p, tasks))(params)
      assert rel_err(got[1], ref[1]) < 1e-12, schedule


def test_segments_and_bad_schedules():
  assert remat_lib.segments(7, 3) == [(0, 3), (3, 3), (6, 1)]
  assert Remat("sqrt").segment_length(50) == 8
  assert remat_lib.resolve(False) is None and remat_lib.resolve("none") is None
  assert remat_lib.resolve("every:4") == Remat(4)
  for bad in ("every:0", "every:x", "always", 3):
    with pytest.raises(ValueError, match="remat|Remat"):
      remat_lib.resolve(bad)
  with pytest.raises(ValueError, match="policy"):
    Remat(1, policy="everything")
  with pytest.raises(ValueError, match="remat"):
    mj.MAML(MLP((4,), 1), remat="sometimes")


def _scratch_bytes(steps, remat):
  tasks = image_tasks(jax.random.PRNGKey(0), num_tasks=1, ways=3, shots=1,
                      query=2, size=12, dtype=jnp.float32)
  learner = mj.MAML(Conv4(3, filters=8, blocks=2), loss="cross_entropy",
                    inner_steps=steps, inner_lr=0.4, unroll=False,
                    remat=remat)
  params = learner.init(jax.random.PRNGKey(1), first(tasks))
  compiled = jax.jit(lambda p: learner.meta_grad(p, tasks)[1]).lower(
      params).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_per_step_remat_memory_grows_slower_than_plain():
  # XLA's own buffer assignment, not a timing: deterministic for a program.
  plain = {k: _scratch_bytes(k, False) for k in (2, 16)}
  remat = {k: _scratch_bytes(k, True) for k in (2, 16)}
  assert plain[16] > 3 * plain[2]
  assert remat[16] - remat[2] < 0.5 * (plain[16] - plain[2])
