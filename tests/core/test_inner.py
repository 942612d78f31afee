"""The inner loop and its update rules: rate forms, masks, first order, the
proximal term, scan vs unroll."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax as mj
from metajax.core import inner
from tests.helpers import rel_err


def quad_problem():
  # Loss 0.5 * sum(a * w^2) + b . w with a closed-form gradient-descent path.
  params = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(0.3)}
  a = jnp.array([1.0, 2.0, 3.0])
  loss = lambda p: 0.5 * jnp.sum(a * p["w"] ** 2) + p["b"] ** 2
  return params, a, loss


def test_plain_gradient_descent_closed_form():
  params, a, loss = quad_problem()
  out = mj.adapt(loss, params, steps=3, lr=0.1)
  np.testing.assert_allclose(out["w"], params["w"] * (1 - 0.1 * a) ** 3, rtol=1e-6)
  np.testing.assert_allclose(out["b"], params["b"] * (1 - 0.2) ** 3, rtol=1e-6)


def test_scan_unroll_remat_agree():
  params, _, loss = quad_problem()
  ref = mj.adapt(loss, params, steps=4, lr=0.05)
  for unroll in (False, 2):
    for remat in (False, True):
      got = mj.adapt(loss, params, steps=4, lr=0.05, unroll=unroll, remat=remat)
      assert rel_err(got, ref) < 1e-6


def test_per_param_and_per_step_rates():
  params, a, loss = quad_problem()
  lr = {"w": jnp.array([0.1, 0.2, 0.05]), "b": jnp.array(0.0)}
  out = mj.adapt(loss, params, steps=2, lr=lr)
  np.testing.assert_allclose(out["w"], params["w"] * (1 - lr["w"] * a) ** 2, rtol=1e-6)
  np.testing.assert_allclose(out["b"], params["b"])
  per_step = {"w": jnp.array([0.1, 0.3]), "b": jnp.array([0.1, 0.2])}
  for unroll in (True, False):
    out = mj.adapt(loss, params, steps=2, update=inner.per_step_sgd(per_step),
                   unroll=unroll)
    np.testing.assert_allclose(out["w"], params["w"] * (1 - 0.1 * a) * (1 - 0.3 * a), rtol=1e-6)
  with pytest.raises(ValueError, match="cover 2 steps but 3"):
    inner.check_per_step_rates(per_step, 3)
  with pytest.raises(ValueError, match="exactly one of lr= or update="):
    mj.adapt(loss, params, steps=1, lr=0.1, update=inner.sgd(0.1))
  with pytest.raises(ValueError, match="structure of the parameters"):
    mj.adapt(loss, params, steps=1, lr={"w": 0.1})


def test_mask_freezes_leaves():
  params, a, loss = quad_problem()
  out = mj.adapt(loss, params, steps=2, lr=0.1, mask=lambda path: path == "w")
  np.testing.assert_array_equal(out["b"], params["b"])
  np.testing.assert_allclose(out["w"], params["w"] * (1 - 0.1 * a) ** 2, rtol=1e-6)
  with pytest.raises(ValueError, match="selects no parameter"):
    mj.adapt(loss, params, steps=1, lr=0.1, mask=lambda path: False)


def test_first_order_drops_second_order_terms():
  params, a, loss = quad_problem()
  outer = lambda p, fo: jnp.sum(mj.adapt(
      loss, p, steps=1,
      update=optax.chain(inner.first_order(fo), inner.sgd(0.1)))["w"])
  g2 = jax.grad(outer)(params, False)["w"]
  g1 = jax.grad(outer)(params, True)["w"]
  np.testing.assert_allclose(g2, 1 - 0.1 * a, rtol=1e-6)  # d(w - lr a w)/dw
  np.testing.assert_allclose(g1, np.ones(3), rtol=1e-6)
  # A traced flag (MAML++'s annealed order) picks the same two gradients.
  traced = jax.jit(lambda p, fo: jax.grad(outer)(p, fo))
  np.testing.assert_allclose(traced(params, jnp.asarray(False))["w"], g2, rtol=1e-6)
  np.testing.assert_allclose(traced(params, jnp.asarray(True))["w"], g1, rtol=1e-6)


def test_proximal_rule_descends_on_the_regularised_loss():
  params, a, loss = quad_problem()
  theta = jax.tree_util.tree_map(lambda x: x + 1.0, params)
  lam = 0.7
  reg = lambda p: loss(p) + 0.5 * lam * sum(
      jnp.sum(jnp.square(x - t)) for x, t in zip(
          jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(theta)))
  ref = mj.adapt(reg, params, steps=3, lr=0.05)
  got = mj.adapt(loss, params, steps=3,
                 update=optax.chain(inner.proximal(theta, lam), inner.sgd(0.05)))
  assert rel_err(got, ref) < 1e-6


def test_trajectory_and_inner_optimizer():
  params, a, loss = quad_problem()
  final, traj = mj.adapt(loss, params, steps=3, lr=0.1, return_trajectory=True)
  assert traj["w"].shape == (3, 3) and traj["b"].shape == (3,)
  np.testing.assert_allclose(traj["w"][-1], final["w"])
  np.testing.assert_allclose(traj["w"][0], params["w"] * (1 - 0.1 * a), rtol=1e-6)
  # An optax SGD inner optimiser reproduces plain gradient descent.
  via_opt = mj.adapt(loss, params, steps=3, update=optax.sgd(0.1))
  assert rel_err(via_opt, final) < 1e-6
  with pytest.raises(ValueError, match="inner steps must be >= 0"):
    mj.adapt(loss, params, steps=-1, lr=0.1)
  same = mj.adapt(loss, params, steps=0, lr=0.1)
  assert rel_err(same, params) == 0
