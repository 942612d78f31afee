"""The LSTM meta-learner against the paper's equations in a plain loop, its
reduction to gradient descent, and meta-training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax import models
from metajax.algorithms import registry
from metajax.algorithms.lstm_meta import LSTMMetaLearner, preprocess
from metajax.algorithms.maml import MAML
from tests.helpers import class_tasks, one, train_loss_drop


def _np_preprocess(x, p=10.0):
  x = np.asarray(x, np.float64)
  big = np.abs(x) > np.exp(-p)
  return np.stack([np.where(big, np.log(np.abs(np.where(big, x, 1))) / p, -1),
                   np.where(big, np.sign(x), np.exp(p) * x)], -1)


def test_preprocessing_matches_the_definition():
  x = np.array([3.0, -2e-3, 1e-6, -4e-5, 0.0, 2e-5])
  np.testing.assert_allclose(np.asarray(preprocess(jnp.asarray(x))),
                             _np_preprocess(x), rtol=1e-6, atol=1e-12)


def _sigmoid(z):
  return 1 / (1 + np.exp(-z))


def test_updates_are_the_papers_gate_equations():
  with jax.enable_x64(True):
    tasks = class_tasks(0, num_tasks=1, ways=3, shots=2, query=2, dim=4)
    t = jax.tree_util.tree_map(lambda a: a[0], tasks)
    t = t._replace(support_x=t.support_x.astype(jnp.float64),
                   query_x=t.query_x.astype(jnp.float64))
    net = models.MLP((3,), 3)
    learner = LSTMMetaLearner(net, loss="cross_entropy", inner_steps=4,
                              inner_batch=4, hidden=5)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),
                                    learner.init(jax.random.PRNGKey(1), t))
    got = jax.flatten_util.ravel_pytree(
        learner.adapt(params, t.support_x, t.support_y))[0]

    theta, unravel = jax.flatten_util.ravel_pytree(params["model"])
    theta = np.asarray(theta)
    lstm = {k: np.asarray(v) for k, v in params["lstm"].items()}
    g8 = {k: np.asarray(v) for k, v in params["gates"].items()}
    n, hid = theta.size, 5
    h, c = np.zeros((n, hid)), np.zeros((n, hid))
    f_prev, i_prev = np.zeros(n), np.zeros(n)
    x_all, y_all = np.asarray(t.support_x), np.asarray(t.support_y)
    for step in range(4):
      start = (step % 2) * 4                    # 6 examples, batches of 4: 4, 2
      x, y = x_all[start:start + 4], y_all[start:start + 4]
      loss, grad = jax.value_and_grad(lambda v: learner.support_loss(
          unravel(v), x, y))(jnp.asarray(theta))
      grad = np.asarray(grad)
      inp = np.concatenate([np.broadcast_to(_np_preprocess(float(loss)),
                                            (n, 2)), _np_preprocess(grad)], 1)
      z = inp @ lstm["wx"] + h @ lstm["wh"] + lstm["b"]
      zi, zf, zo, zg = np.split(z, 4, 1)
      c = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zg)
      h = _sigmoid(zo) * np.tanh(c)
      f = np.concatenate([h, theta[:, None], f_prev[:, None]], 1) @ g8["wf"] + g8["bf"]
      i = np.concatenate([h, theta[:, None], i_prev[:, None]], 1) @ g8["wi"] + g8["bi"]
      theta = _sigmoid(f) * theta - _sigmoid(i) * grad
      f_prev, i_prev = f, i
    np.testing.assert_allclose(np.asarray(got), theta, rtol=1e-10, atol=1e-12)


def test_constant_gates_reduce_to_gradient_descent():
  with jax.enable_x64(True):
    tasks = class_tasks(1, num_tasks=1, ways=3, shots=2, query=2, dim=4)
    t = jax.tree_util.tree_map(lambda a: a[0].astype(jnp.float64)
                               if a.dtype == jnp.float32 else a[0], tasks)
    net = models.MLP((6,), 3)
    alpha, steps = 0.3, 5
    learner = LSTMMetaLearner(net, loss="cross_entropy", inner_steps=steps)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),
                                    learner.init(jax.random.PRNGKey(2), t))
    params["gates"] = {"wf": jnp.zeros(22), "wi": jnp.zeros(22),
                       "bf": jnp.asarray(40.0),  # sigmoid = 1 in float64
                       "bi": jnp.asarray(np.log(alpha / (1 - alpha)))}
    got = learner.adapt(params, t.support_x, t.support_y)
    sgd = MAML(net, loss="cross_entropy", inner_steps=steps, inner_lr=alpha)
    want = sgd.adapt({"model": params["model"]}, t.support_x, t.support_y)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(got)[0],
                               jax.flatten_util.ravel_pytree(want)[0],
                               rtol=1e-10, atol=1e-12)


def test_meta_training_lowers_the_query_loss():
  tasks = class_tasks(2, num_tasks=4, ways=3, shots=2, query=3, dim=6)
  learner = registry.make("lstm_metalearner", models.MLP((16,), 3),
                          loss="cross_entropy", inner_steps=3,
                          inner_batch=None)
  before, after = train_loss_drop(learner, tasks, steps=30, lr=1e-2)
  assert after < 0.8 * before
  exact = LSTMMetaLearner(models.MLP((16,), 3), loss="cross_entropy",
                          inner_steps=3, first_order=False)
  p = exact.init(jax.random.PRNGKey(0), one(tasks))
  (l1, _), g1 = jax.jit(exact.task_grad)(p, one(tasks))
  (l2, _), g2 = jax.jit(learner.task_grad)(p, one(tasks))
  assert float(l1) == pytest.approx(float(l2), rel=1e-5)  # same forward
  d = jax.flatten_util.ravel_pytree(g1)[0] - jax.flatten_util.ravel_pytree(g2)[0]
  assert float(jnp.max(jnp.abs(d))) > 0  # the second-order terms


def test_evaluation_curve_and_bad_settings():
  tasks = class_tasks(3, num_tasks=2, ways=3, shots=2, query=3, dim=6)
  learner = LSTMMetaLearner(models.MLP((8,), 3), loss="cross_entropy",
                            inner_steps=2, eval_inner_steps=4)
  p = learner.init(jax.random.PRNGKey(0), one(tasks))
  m = jax.jit(jax.vmap(lambda t: learner.evaluate(p, t)))(tasks)
  assert m["accuracy"].shape == (2, 5)
  with pytest.raises(ValueError, match="inner_batch"):
    LSTMMetaLearner(models.MLP((8,), 3), inner_batch=0)
