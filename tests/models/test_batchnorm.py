"""Transductive batch norm stays per task (and per set) under vmap."""
import jax
import jax.numpy as jnp
import numpy as np

import metajax as mj
from metajax.models import Conv4, TransductiveBatchNorm
from tests.helpers import first, image_tasks


def test_changing_one_task_changes_no_other_tasks_outputs():
  tasks = image_tasks(jax.random.PRNGKey(0), num_tasks=4, size=8, dtype=jnp.float32)
  learner = mj.MAML(Conv4(3, filters=4, blocks=2), loss="cross_entropy",
                    inner_steps=2, inner_lr=0.4)
  params = learner.init(jax.random.PRNGKey(1), first(tasks))

  @jax.jit
  def adapted_outputs(tasks):
    def one(t):
      state = learner.adapt(params, t.support_x, t.support_y)
      return learner.predict(params, state, t.query_x)
    return jax.vmap(one)(tasks)

  before = adapted_outputs(tasks)
  changed = tasks._replace(
      support_x=tasks.support_x.at[2].multiply(3.0).at[2].add(1.0),
      query_x=tasks.query_x.at[2].add(5.0))
  after = adapted_outputs(changed)
  others = np.array([0, 1, 3])
  np.testing.assert_array_equal(np.asarray(after)[others], np.asarray(before)[others])
  assert not np.allclose(after[2], before[2])


def test_statistics_are_those_of_the_batch_given():
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 4, 4, 3)) * 3 + 2
  bn = TransductiveBatchNorm()
  p = bn.init(jax.random.PRNGKey(1), x)
  y = bn.apply(p, x)
  np.testing.assert_allclose(y.mean((0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(y.var((0, 1, 2)), 1, atol=1e-3)
  # Query outputs do not depend on other query examples' support: each call
  # normalises with its own batch only.
  y_half = bn.apply(p, x[:3])
  assert not np.allclose(y_half, y[:3])
