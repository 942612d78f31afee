"""MetaOptNet: the SVM dual's KKT conditions, implicit gradient vs finite
differences (float64), the ridge head, absent classes, training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.algorithms.metaoptnet import (MetaOptNet, crammer_singer_dual,
                                project_simplex, ridge_dual,
                                svm_dual_kkt_residual)
from metajax.algorithms import registry
from metajax.models import MLP
from tests.helpers import class_tasks, one, train_loss_drop


def svm_problem(seed=0, n=12, d=20, m=4):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d))
  y = np.repeat(np.arange(m), n // m)
  return x, y, np.eye(m)[y]


def check_kkt(gram, y1h, c, alpha, tol):
  """The KKT conditions of min 1/2 tr(a^T K a) - sum(Y * a) s.t. a <= cY,
  rows of a sum to 0, checked directly in numpy.

  Stationarity gives g = K a - Y = -gamma_n - beta_n^k with beta >= 0, so each
  row's max of g is attained wherever a_n^k < c Y_n^k (complementary
  slackness), i.e. beta = max_k g - g and beta * (cY - a) = 0.
  """
  alpha = np.asarray(alpha, np.float64)
  slack = c * y1h - alpha
  assert slack.min() >= -tol                                  # a <= cY
  np.testing.assert_allclose(alpha.sum(1), 0.0, atol=tol)      # sum_k a = 0
  g = gram @ alpha - y1h
  beta = g.max(1, keepdims=True) - g                           # >= 0
  assert np.max(np.abs(beta * slack)) <= tol                   # complementarity
  return g


def test_svm_dual_satisfies_kkt_and_strong_duality():
  with jax.enable_x64(True):
    x, y, y1h = svm_problem()
    c = 0.1
    alpha = np.asarray(jax.jit(lambda k, y: crammer_singer_dual(
        k, y, c, iters=2000))(jnp.asarray(x @ x.T), jnp.asarray(y1h)))
    check_kkt(x @ x.T, y1h, c, alpha, tol=1e-10)
    # Strong duality with the primal Crammer-Singer SVM at W = X^T alpha.
    w = x.T @ alpha
    scores = x @ w
    xi = np.max(scores + 1 - y1h, 1) - scores[np.arange(len(y)), y]
    primal = 0.5 * np.sum(w ** 2) + c * np.sum(xi)
    dual = np.sum(alpha * y1h) - 0.5 * np.sum(w ** 2)
    np.testing.assert_allclose(primal, dual, rtol=1e-9)
    assert float(svm_dual_kkt_residual(x @ x.T, y1h, c, alpha)) < 1e-10
    # Both kinds of constraints are active somewhere: a real test of the
    # projection, not of an unconstrained solve.
    assert np.any(np.isclose(alpha, c * y1h)) and np.any(alpha < c * y1h - 1e-6)
    off = alpha + 1e-3 * np.random.default_rng(1).normal(size=alpha.shape)
    assert float(svm_dual_kkt_residual(x @ x.T, y1h, c, off)) > 1e-4


def test_svm_gradient_matches_finite_differences():
  with jax.enable_x64(True):
    x, _, y1h = svm_problem(seed=2)
    rng = np.random.default_rng(3)
    xq, v = rng.normal(size=(5, x.shape[1])), rng.normal(size=(5, 4))

    def make(backward):
      def loss(xs):
        a = crammer_singer_dual(xs @ xs.T, jnp.asarray(y1h), 0.1, iters=3000,
                                backward=backward, jitter=0.0)
        return jnp.sum(jnp.asarray(v) * (jnp.asarray(xq) @ xs.T @ a))
      return jax.jit(loss)

    loss = make("dense")
    xs = jnp.asarray(x)
    grad = np.asarray(jax.grad(loss)(xs))
    eps = 1e-6
    for k in range(3):
      d = rng.normal(size=x.shape)
      fd = (loss(xs + eps * d) - loss(xs - eps * d)) / (2 * eps)
      np.testing.assert_allclose(np.sum(grad * d), fd, rtol=1e-6)
    # The gradient through the dual alone (not just via W = X^T alpha) is
    # resolved: compare against treating alpha as a constant.
    a0 = jax.jit(lambda z: crammer_singer_dual(z @ z.T, jnp.asarray(y1h), 0.1,
                                               iters=3000))(xs)
    # d/dX of sum(V * (Xq X^T a0)) with a0 fixed is a0 V^T Xq.
    g_const = np.asarray(a0) @ v.T @ xq
    assert np.linalg.norm(g_const - grad) > 1e-3 * np.linalg.norm(grad)
    grad_cg = np.asarray(jax.grad(make("cg"))(xs))
    np.testing.assert_allclose(grad_cg, grad, rtol=1e-5, atol=1e-8)


def test_absent_classes_are_left_out():
  """A 4-wide problem with only 3 classes present equals the 3-class SVM."""
  with jax.enable_x64(True):
    x, _, y1h = svm_problem(seed=4, n=9, m=3)
    wide = np.concatenate([y1h, np.zeros((9, 1))], 1)
    a3, a4 = jax.jit(lambda k: (
        crammer_singer_dual(k, jnp.asarray(y1h), 0.1, iters=2000),
        crammer_singer_dual(k, jnp.asarray(wide), 0.1, iters=2000)))(
            jnp.asarray(x @ x.T))
    np.testing.assert_allclose(a4[:, :3], a3, atol=1e-10)
    np.testing.assert_array_equal(a4[:, 3], 0.0)


def test_project_simplex_matches_bisection():
  rng = np.random.default_rng(5)
  v = rng.normal(size=(6, 5)) * 2
  mask = rng.random((6, 5)) > 0.3
  mask[:, 0] = True
  u = np.asarray(project_simplex(jnp.asarray(v), jnp.asarray(mask)))
  for row, mrow, urow in zip(v, mask, u):
    lo, hi = row.min() - 1, row.max()
    for _ in range(200):  # find tau with sum(max(v - tau, 0)) = 1 on the mask
      tau = 0.5 * (lo + hi)
      lo, hi = (tau, hi) if np.maximum(row - tau, 0)[mrow].sum() > 1 else (lo,
                                                                         tau)
    ref = np.where(mrow, np.maximum(row - tau, 0), 0)
    np.testing.assert_allclose(urow, ref, atol=1e-5)


def test_ridge_head_matches_numpy():
  with jax.enable_x64(True):
    x, _, y1h = svm_problem(seed=6)
    a = ridge_dual(jnp.asarray(x @ x.T), jnp.asarray(y1h), 50.0)
    ref = 2 * np.linalg.solve(x @ x.T + 50 * np.eye(len(x)), y1h)
    np.testing.assert_allclose(a, ref, rtol=1e-10)


@pytest.mark.parametrize("head", ["svm", "ridge"])
def test_learner_meta_gradient_matches_finite_differences(head):
  with jax.enable_x64(True):
    t = one(class_tasks(1, num_tasks=1, ways=3, shots=2, query=2, dim=6))
    t = t._replace(support_x=t.support_x.astype(np.float64),
                   query_x=t.query_x.astype(np.float64))
    learner = MetaOptNet(MLP((8,), 10, activation=jnp.tanh), head=head,
                         ways=3, qp_iters=3000, jitter=0.0)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),
                                    learner.init(jax.random.PRNGKey(0), t))
    f = jax.jit(lambda p: learner.task_loss(p, t)[0])
    grad = jax.grad(f)(params)
    x0, unravel = jax.flatten_util.ravel_pytree(params)
    g0, _ = jax.flatten_util.ravel_pytree(grad)
    rng = np.random.default_rng(7)
    for _ in range(2):
      d = rng.normal(size=x0.shape)
      eps = 1e-6
      fd = (f(unravel(x0 + eps * d)) - f(unravel(x0 - eps * d))) / (2 * eps)
      np.testing.assert_allclose(np.dot(np.asarray(g0), d), fd, rtol=1e-5)


def test_bad_options_raise():
  mlp = MLP((4,), 3)
  with pytest.raises(ValueError, match="head"):
    MetaOptNet(mlp, head="lasso")
  with pytest.raises(ValueError, match="backward"):
    MetaOptNet(mlp, backward="lu")
  with pytest.raises(ValueError, match="cost C"):
    MetaOptNet(mlp, C=0.0)
  with pytest.raises(ValueError, match="qp_iters"):
    MetaOptNet(mlp, qp_iters=0)
  with pytest.raises(ValueError, match="label_smoothing"):
    MetaOptNet(mlp, label_smoothing=1.0)
  with pytest.raises(ValueError, match="square"):
    crammer_singer_dual(jnp.zeros((3, 2)), jnp.zeros((3, 2)))
  with pytest.raises(ValueError, match="rows"):
    crammer_singer_dual(jnp.zeros((3, 3)), jnp.zeros((4, 2)))


@pytest.mark.parametrize("head", ["svm", "ridge"])
def test_meta_training_loss_falls(head):
  tasks = class_tasks(6, num_tasks=3, ways=3, shots=2, query=3)
  learner = MetaOptNet(MLP((16,), 8), head=head, ways=3, qp_iters=50)
  first, last = train_loss_drop(learner, tasks, steps=40, lr=2e-2)
  assert last < 0.7 * first, (first, last)


def test_paper_settings():
  svm = registry.make("metaoptnet", MLP((4,), 3))
  assert isinstance(svm, MetaOptNet)
  assert (svm.head, svm.C, svm.label_smoothing, svm.embedding) == (
      "svm", 0.1, 0.1, "separate")
  ridge = registry.make("metaoptnet_ridge", MLP((4,), 3))
  assert (ridge.head, ridge.ridge_lambda) == ("ridge", 50.0)
  # No Omniglot experiment in the paper: the head is sized for the test ways.
  assert registry.make("metaoptnet", MLP((4,), 3),
                       setting="omniglot_20way_1shot").ways == 20
  with pytest.raises(ValueError, match="unknown paper setting"):
    registry.make("metaoptnet", MLP((4,), 3), setting="fc100")

