"""Every task-mapping path equals a plain Python loop over tasks.

A jit(vmap(...)) MAML meta-gradient with >= 2 inner steps and several tasks
has been seen to come out wrong on XLA:CPU in an earlier port, so each path
(vmap, lax.map in chunks, traced loop; jitted or not; scanned or unrolled
inner loop; rematerialised) is checked against one eager grad per task.
"""
import jax
import numpy as np
import pytest

import metajax as mj
from metajax.models import MLP, Conv4
from tests.helpers import first, image_tasks, python_loop_grad, regression_tasks, rel_err, to64


def _paths():
  # Eager lax.map / traced loops compile like their jitted versions; eager
  # vmap is the one op-by-op path.
  yield "vmap", None, False
  for method, chunk in (("vmap", None), ("map", None), ("map", 2), ("loop", None)):
    yield method, chunk, True


@pytest.mark.parametrize("unroll", [True, False])
def test_mlp_paths_match_python_loop(unroll):
  with jax.enable_x64(True):
    tasks = regression_tasks(jax.random.PRNGKey(0), num_tasks=5)
    learner = mj.MAML(MLP((8, 8), 1), inner_steps=3, inner_lr=0.1, unroll=unroll)
    params = to64(learner.init(jax.random.PRNGKey(1), first(tasks)))
    ref = python_loop_grad(learner, params, tasks)
    for method, chunk, jit in _paths():
      f = lambda p: learner.meta_grad(p, tasks, task_map=method, chunk_size=chunk)[1]
      got = (jax.jit(f) if jit else f)(params)
      assert rel_err(got, ref) < 1e-12, (method, chunk, jit)


def test_conv_paths_match_python_loop_float32():
  tasks = image_tasks(jax.random.PRNGKey(0), num_tasks=4, size=8,
                      dtype=np.float32)
  learner = mj.MAML(Conv4(3, filters=4, blocks=2), loss="cross_entropy",
                    inner_steps=2, inner_lr=0.4)
  params = learner.init(jax.random.PRNGKey(1), first(tasks))
  ref = python_loop_grad(learner, params, tasks)
  for method, chunk, jit in _paths():
    if not jit:
      continue  # op-by-op conv is slow; the MLP test covers eager vmap
    f = lambda p: learner.meta_grad(p, tasks, task_map=method, chunk_size=chunk)[1]
    got = (jax.jit(f) if jit else f)(params)
    assert rel_err(got, ref) < 1e-5, (method, chunk, jit)


def test_remat_and_chunking_equal_plain_step():
  with jax.enable_x64(True):
    tasks = image_tasks(jax.random.PRNGKey(3), num_tasks=4, size=8)
    kw = dict(loss="cross_entropy", inner_steps=2, inner_lr=0.4)
    model = Conv4(3, filters=3, blocks=2)
    plain = mj.MAML(model, **kw)
    params = to64(plain.init(jax.random.PRNGKey(4), first(tasks)))
    ref = jax.jit(lambda p: plain.meta_grad(p, tasks)[1])(params)
    for remat, unroll, method, chunk in ((False, False, "map", 3),
                                         (True, True, "vmap", None),
                                         (True, False, "map", 1)):
      learner = mj.MAML(model, remat=remat, unroll=unroll, **kw)
      got = jax.jit(lambda p: learner.meta_grad(
          p, tasks, task_map=method, chunk_size=chunk)[1])(params)
      assert rel_err(got, ref) < 1e-12, (remat, unroll, method, chunk)


def test_make_meta_step_paths_agree():
  tasks = regression_tasks(jax.random.PRNGKey(0), num_tasks=4, dtype=np.float32)
  learner = mj.MAML(MLP((8,), 1), inner_steps=2, inner_lr=0.1)
  import optax
  opt = optax.adam(1e-2)
  outs = {}
  for method in ("vmap", "map", "loop"):
    state = mj.init_state(learner, opt, jax.random.PRNGKey(0), first(tasks))
    step = mj.make_meta_step(learner, opt, task_map=method, chunk_size=2)
    for _ in range(3):
      state, metrics = step(state, tasks)
    outs[method] = (state.params, metrics["loss"])
  for method in ("map", "loop"):
    assert rel_err(outs[method][0], outs["vmap"][0]) < 1e-5
    np.testing.assert_allclose(outs[method][1], outs["vmap"][1], rtol=1e-5)
  with pytest.raises(ValueError, match="task mapping"):
    mj.make_meta_step(learner, opt, task_map="pmap")
