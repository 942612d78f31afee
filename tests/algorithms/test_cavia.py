"""CAVIA against a hand-written context-only inner loop; its reset and
registry settings."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax import models
from metajax.algorithms import registry
from metajax.algorithms.cavia import CAVIA
from metajax.core.tasks import task_slice
from metajax.data.sinusoid import sample_tasks
from tests.helpers import train_loss_drop

ALPHA = 0.3


def _flat(tree):
  return np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(tree)])


def test_meta_gradient_is_the_context_only_inner_loop():
  with jax.enable_x64(True):
    net = models.MLP(hidden=(6,), activation=nn.tanh)
    task = task_slice(sample_tasks(jax.random.PRNGKey(0), 1, 5, 7,
                                   dtype=jnp.float64), 0)
    learner = CAVIA(net, num_context=3, inner_steps=2, inner_lr=ALPHA,
                    loss="mse")
    params = learner.init(jax.random.PRNGKey(1), task)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    # a nonzero stored context must make no difference: every task starts at 0
    params["model"]["context"] = jnp.asarray([0.5, -1.0, 2.0])
    _, grads = jax.jit(learner.task_grad)(params, task)

    # by hand: theta fixed, the context takes the steps from zero
    def predict(theta, ctx, x):
      inputs = jnp.concatenate([x, jnp.broadcast_to(ctx, (x.shape[0], 3))], 1)
      return net.apply({"params": theta}, inputs)

    def objective(theta):
      ctx = jnp.zeros(3)
      loss = lambda c, x, y: jnp.mean((predict(theta, c, x) - y) ** 2)  # noqa: E731
      for _ in range(2):
        ctx = ctx - ALPHA * jax.grad(loss)(ctx, task.support_x, task.support_y)
      return loss(ctx, task.query_x, task.query_y)

    want = jax.jit(jax.grad(objective))(params["model"]["model"])
    np.testing.assert_allclose(_flat(grads["model"]["model"]), _flat(want),
                               rtol=1e-10, atol=1e-12)
    # the context is not meta-learned: its meta-gradient is exactly zero
    np.testing.assert_array_equal(np.asarray(grads["model"]["context"]), 0.0)
    # the inner loop moves the context only
    adapted = learner.adapt(params, task.support_x, task.support_y)
    np.testing.assert_array_equal(_flat(adapted["model"]),
                                  _flat(params["model"]["model"]))
    assert np.abs(np.asarray(adapted["context"])).max() > 0


def test_cavia_meta_trains_on_sinusoid_and_reads_its_settings():
  tasks = sample_tasks(jax.random.PRNGKey(2), 8, 10, 10)
  learner = registry.make("cavia", models.MLP((40, 40), 1))
  assert (learner.num_context, learner.inner_lr, learner.inner_steps) == (
      5, 1.0, 1)
  assert isinstance(learner.model, models.WithContext)
  before, after = train_loss_drop(learner, tasks, steps=60, lr=1e-2)
  assert after < 0.6 * before
  with pytest.raises(ValueError, match="num_context"):
    CAVIA(models.MLP((4,), 1), num_context=0)


def test_context_becomes_constant_image_channels():
  net = models.WithContext(models.Conv4(3, filters=2, blocks=1), 2)
  x = jnp.ones((4, 8, 8, 1))
  variables = net.init(jax.random.PRNGKey(0), x)
  kernel = variables["params"]["model"]["conv0"]["kernel"]
  assert kernel.shape[2] == 3  # one image channel + two context channels
  assert net.apply(variables, x).shape == (4, 3)
