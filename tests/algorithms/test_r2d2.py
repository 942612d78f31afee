"""R2-D2: Woodbury ridge weights against numpy's primal solve, head, training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax import configs
from metajax.algorithms import registry
from metajax.models import MLP
from metajax.algorithms.r2d2 import R2D2, ridge_primal, ridge_woodbury, with_bias_column
from tests.helpers import class_tasks, one, train_loss_drop


def test_woodbury_weights_match_primal_numpy_solve():
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 9)), rng.normal(size=(6, 3))
    lam = 0.7
    ref = np.linalg.solve(x.T @ x + lam * np.eye(9), x.T @ y)
    np.testing.assert_allclose(ridge_woodbury(jnp.asarray(x), jnp.asarray(y),
                                              lam), ref, rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(ridge_primal(jnp.asarray(x), jnp.asarray(y),
                                            lam), ref, rtol=1e-10, atol=1e-12)


def test_learner_head_matches_numpy():
  """Bias column, S * lambda, scale and offset, absent classes masked."""
  with jax.enable_x64(True):
    t = one(class_tasks(0, num_tasks=1, ways=3, shots=2, query=2))
    t = t._replace(support_x=t.support_x.astype(np.float64),
                   query_x=t.query_x.astype(np.float64))
    learner = R2D2(MLP((8,), 5, activation=jnp.tanh), ways=4,
                   embedding="separate", init_lambda=0.3, init_scale=2.0,
                   init_bias=0.5)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),
                                    learner.init(jax.random.PRNGKey(0), t))
    logits = np.asarray(learner.logits(params, *t[:3]))
    fs = np.asarray(learner.apply(params["model"], t.support_x))
    fq = np.asarray(learner.apply(params["model"], t.query_x))
    xs = np.concatenate([fs, np.ones((6, 1))], 1)
    xq = np.concatenate([fq, np.ones((6, 1))], 1)
    y = np.eye(4)[np.asarray(t.support_y)]
    w = np.linalg.solve(xs.T @ xs + 6 * 0.3 * np.eye(6), xs.T @ y)
    ref = 2.0 * (xq @ w) + 0.5
    np.testing.assert_allclose(logits[:, :3], ref[:, :3], rtol=1e-9)
    assert np.all(np.isneginf(logits[:, 3]))
    primal = R2D2(learner.model, ways=4, embedding="separate", form="primal",
                  init_lambda=0.3)
    np.testing.assert_allclose(primal.logits(params, *t[:3])[:, :3],
                               logits[:, :3], rtol=1e-9)


def test_lambda_scale_offset_are_learned():
  t = one(class_tasks(0, num_tasks=1))
  learner = R2D2(MLP((8,), 5), ways=3)
  params = learner.init(jax.random.PRNGKey(0), t)
  np.testing.assert_allclose(jnp.exp(params["log_lambda"]), 50.0, rtol=1e-6)
  np.testing.assert_allclose(params["scale"], 1e-4)
  g = jax.jit(jax.grad(lambda p: learner.task_loss(p, t)[0]))(params)
  for k in ("log_lambda", "scale", "bias"):
    assert np.isfinite(g[k]) and g[k] != 0, k
  fixed = R2D2(MLP((8,), 5), ways=3, learn_lambda=False)
  assert "log_lambda" not in fixed.init(jax.random.PRNGKey(0), t)


def test_bad_options_raise():
  with pytest.raises(ValueError, match="init_lambda"):
    R2D2(MLP((4,), 3), init_lambda=0.0)
  with pytest.raises(ValueError, match="form"):
    R2D2(MLP((4,), 3), form="dual")


def test_bias_column():
  np.testing.assert_array_equal(with_bias_column(jnp.zeros((2, 3)))[:, 3], 1.0)


def test_meta_training_loss_falls():
  tasks = class_tasks(5, num_tasks=3, ways=3, shots=2, query=3)
  learner = R2D2(MLP((16,), 8), ways=3, init_scale=1.0)
  first, last = train_loss_drop(learner, tasks, steps=40, lr=2e-2)
  assert last < 0.7 * first, (first, last)


def test_paper_settings():
  mini = registry.make("r2d2", MLP((4,), 3))
  assert isinstance(mini, R2D2)
  assert (mini.ways, mini.init_lambda, mini.init_scale) == (16, 50.0, 1e-4)
  omniglot = registry.make("r2d2", MLP((4,), 3), setting="omniglot_5way_1shot")
  assert omniglot.ways == 60
  assert configs.get("r2d2", "cifarfs_5way_1shot").outer["meta_lr"] == 5e-3
  with pytest.raises(ValueError, match="unknown paper setting"):
    registry.make("r2d2", MLP((4,), 3), setting="tiered")
