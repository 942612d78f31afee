"""iMAML: implicit meta-gradient against unrolled autodiff, CG, memory."""
import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.core import learner as learner_lib
from metajax import models
from metajax.algorithms import registry
from metajax.core import task_map
from metajax.data.sinusoid import sample_tasks
from metajax.algorithms.imaml import IMAML, conjugate_gradient
from metajax.algorithms.maml import MAML
from metajax.core.tasks import Task, task_slice


def _f64(tree):
  return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), tree)


def _tree_vec(tree):
  return jnp.concatenate([jnp.ravel(a) for a in jax.tree_util.tree_leaves(tree)])


def test_implicit_gradient_matches_unrolled_proximal_solve_float64():
  with jax.enable_x64(True):
    model = models.MLP(hidden=(6,), activation=nn.tanh)
    task = task_slice(sample_tasks(jax.random.PRNGKey(3), 1, 8, 8,
                                   dtype=jnp.float64), 0)
    steps, lr, lam = 500, 0.1, 2.0
    lrn = IMAML(model, inner_steps=steps, inner_lr=lr, lam=lam, cg_steps=60)
    params = _f64(lrn.init(jax.random.PRNGKey(0), task))
    theta = params["model"]
    n_params = _tree_vec(theta).size
    assert n_params < 60  # CG reaches the exact solve in <= n_params steps

    def support(p):
      return jnp.mean((model.apply({"params": p}, task.support_x)
                       - task.support_y) ** 2)

    def query(p):
      return jnp.mean((model.apply({"params": p}, task.query_x)
                       - task.query_y) ** 2)

    # Reference: plain gradient descent on the proximal objective, unrolled
    # in Python and differentiated end to end by autodiff.
    def unrolled(theta):
      def prox(p):
        sq = sum(jnp.sum((a - b) ** 2) for a, b in zip(
            jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(theta)))
        return support(p) + 0.5 * lam * sq

      def body(p, _):
        g = jax.grad(prox)(p)
        return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g), None

      phi, _ = jax.lax.scan(body, theta, None, length=steps)
      return phi

    def reference(theta):
      phi = unrolled(theta)
      return query(phi), phi

    (_, phi_ref), ref = jax.jit(jax.value_and_grad(reference, has_aux=True))(
        theta)
    # The inner problem is solved: the proximal gradient vanishes.
    g_prox = jax.grad(support)(phi_ref)
    resid = _tree_vec(g_prox) + lam * (_tree_vec(phi_ref) - _tree_vec(theta))
    assert float(jnp.max(jnp.abs(resid))) < 1e-10

    (loss, _), grads = jax.jit(lrn.task_grad)(params, task)
    np.testing.assert_allclose(float(loss), float(query(phi_ref)), rtol=1e-10)
    got, want = _tree_vec(grads["model"]), _tree_vec(ref)
    rel = float(jnp.linalg.norm(got - want) / jnp.linalg.norm(want))
    assert rel <= 1e-4, rel
    # and the implicit gradient is not the first-order one
    first = _tree_vec(jax.grad(query)(phi_ref))
    assert float(jnp.linalg.norm(first - want) / jnp.linalg.norm(want)) > 1e-3


def test_conjugate_gradient_solves_spd_system():
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    m = rng.normal(size=(7, 7))
    a = m @ m.T + 0.5 * np.eye(7)
    b = {"u": jnp.asarray(rng.normal(size=(3,))),
         "v": jnp.asarray(rng.normal(size=(4,)))}

    def matvec(t):
      x = jnp.concatenate([t["u"], t["v"]])
      y = jnp.asarray(a) @ x
      return {"u": y[:3], "v": y[3:]}

    x = conjugate_gradient(matvec, b, 20)
    want = np.linalg.solve(a, np.concatenate([b["u"], b["v"]]))
    np.testing.assert_allclose(np.concatenate([x["u"], x["v"]]), want,
                               rtol=1e-8)
    # zero right-hand side: no 0/0
    z = conjugate_gradient(matvec, jax.tree_util.tree_map(jnp.zeros_like, b), 3)
    assert all(np.all(np.asarray(l) == 0) for l in jax.tree_util.tree_leaves(z))
  with pytest.raises(ValueError, match="CG steps"):
    conjugate_gradient(lambda v: v, jnp.ones(2), -1)


def test_memory_does_not_grow_with_inner_steps():
  task = task_slice(sample_tasks(jax.random.PRNGKey(0), 1, 10, 10), 0)
  model = models.MLP(hidden=(8,))

  def temp_bytes(lrn):
    p = lrn.init(jax.random.PRNGKey(1), task)
    grad = jax.jit(jax.grad(lambda p: lrn.task_loss(p, task)[0]))
    analysis = grad.lower(p).compile().memory_analysis()
    if analysis is None:
      pytest.skip("no memory analysis on this backend")
    return analysis.temp_size_in_bytes

  imaml = [temp_bytes(IMAML(model, inner_steps=s)) for s in (2, 100)]
  maml = [temp_bytes(MAML(model, inner_steps=s, unroll=False)) for s in (2, 100)]
  assert imaml[1] == imaml[0]
  assert maml[1] > 5 * maml[0]  # the contrast: backprop through the loop


def test_classification_grads_and_cg_zero_is_first_order():
  model = models.MLP(hidden=(8,), num_outputs=3)
  rng = jax.random.PRNGKey(0)
  x = jax.random.normal(rng, (2, 12, 4))
  y = jnp.tile(jnp.arange(3), (2, 4))
  tasks = Task(x[:, :6], y[:, :6], x[:, 6:], y[:, 6:])
  lrn = IMAML(model, loss="cross_entropy", inner_steps=3, ways=3)
  lrn0 = IMAML(model, loss="cross_entropy", inner_steps=3, cg_steps=0)
  params = lrn.init(rng, task_slice(tasks, 0))

  @jax.jit
  def run(params, tasks):
    # integer labels get float0 cotangents, also under vmap
    (_, metrics), grads = lrn.meta_grad(params, tasks)
    # cg_steps=0: the gradient of the query loss at phi*, taken by hand
    task = task_slice(tasks, 0)
    _, g0 = lrn0.task_grad(params, task)
    phi = lrn0.solve(params["model"], task.support_x, task.support_y)
    want = jax.grad(lambda p: lrn0.loss_fn(lrn0.apply(p, task.query_x),
                                           task.query_y))(phi)
    return metrics, grads, g0, want

  metrics, grads, g0, want = run(params, tasks)
  assert "accuracy" in metrics
  assert all(bool(jnp.all(jnp.isfinite(g)))
             for g in jax.tree_util.tree_leaves(grads))
  np.testing.assert_allclose(_tree_vec(g0["model"]), _tree_vec(want),
                             rtol=1e-5, atol=1e-7)


def test_meta_training_lowers_sinusoid_loss_and_evaluate_curves():
  # A well-posed inner problem: inputs scaled to [-1, 1] and amplitudes <= 1
  # keep the support-loss Hessian above -lam, and 40 steps converge the
  # proximal solve, which is what the implicit gradient assumes.
  def tasks_at(seed):
    t = sample_tasks(jax.random.PRNGKey(seed), 8, 10, 10, amplitude=(0.1, 1.0))
    return Task(t.support_x / 5, t.support_y, t.query_x / 5, t.query_y)

  lrn = IMAML(models.MLP(hidden=(32, 32)), inner_steps=40, inner_lr=0.1,
              lam=1.0, cg_steps=5, hvp="forward")
  opt = optax.adam(3e-3)
  held = tasks_at(0)
  state = learner_lib.init_state(lrn, opt, jax.random.PRNGKey(1),
                                 task_slice(held, 0))
  step = learner_lib.make_meta_step(lrn, opt)

  @jax.jit
  def held_out(params):
    loss = task_map.mean_over_tasks(lambda t: lrn.task_loss(params, t)[0],
                                    held)
    return loss, lrn.evaluate(params, task_slice(held, 0), steps=4)

  before, _ = held_out(state.params)
  for i in range(100):
    state, _ = step(state, tasks_at(100 + i))
  after, curve = held_out(state.params)
  assert float(after) < 0.7 * float(before)
  assert curve["loss"].shape == (5,)
  assert bool(curve["loss"][-1] < curve["loss"][0])


@pytest.mark.parametrize("kw, msg", [
    (dict(lam=0.0), "lam > 0"),
    (dict(cg_steps=-1), "cg_steps"),
    (dict(cg_damping=-1.0), "cg_damping"),
    (dict(inner_optimizer="adam"), "inner_optimizer"),
])
def test_bad_config_raises(kw, msg):
  with pytest.raises(ValueError, match=msg):
    IMAML(models.MLP(), **kw)


@pytest.mark.parametrize("field", ["learn_inner_lr", "first_order",
                                   "adapt_mask", "remat"])
def test_maml_only_fields_are_not_imamls(field):
  # iMAML's meta-gradient does not depend on the inner path: the fields that
  # shape MAML's path do not exist here.
  with pytest.raises(TypeError, match=field):
    IMAML(models.MLP(), **{field: True})
  assert not isinstance(IMAML(models.MLP()), MAML)


def test_paper_defaults():
  lrn = registry.make("imaml", models.Conv4(), setting="omniglot_20way_1shot")
  assert isinstance(lrn, IMAML)
  assert (lrn.lam, lrn.cg_steps, lrn.inner_steps) == (2.0, 5, 25)
  assert registry.make("imaml", models.Conv4(),
                       setting="miniimagenet_5way_1shot").lam == 0.5
  with pytest.raises(ValueError, match="unknown paper setting"):
    registry.make("imaml", models.Conv4(), setting="cifar")


def test_implicit_gradient_through_conv4_with_custom_vjp_layers():
  # Hessian-vector products must not need forward mode: metajax's conv has
  # a custom VJP only. Checked against a dense solve on a tiny conv net
  # (lam large enough that I + H / lam is positive definite).
  from metajax.models import Conv4
  from tests.helpers import first, image_tasks, to64
  with jax.enable_x64(True):
    tasks = image_tasks(jax.random.PRNGKey(0), num_tasks=1, size=8)
    learner = IMAML(Conv4(3, filters=2, blocks=2), loss="cross_entropy",
                    inner_steps=3, inner_lr=0.1, lam=50.0, cg_steps=60)
    params = to64(learner.init(jax.random.PRNGKey(1), first(tasks)))
    task = first(tasks)
    g = jax.grad(lambda p: learner.task_loss(p, task)[0])(params)
    phi = learner.adapt(params, task.support_x, task.support_y)
    flat_phi, unravel = jax.flatten_util.ravel_pytree(phi)
    hess = jax.jacrev(jax.jacrev(lambda f: learner.support_loss(unravel(f), task.support_x, task.support_y)))(flat_phi)
    gq = jax.flatten_util.ravel_pytree(jax.grad(
        lambda p: learner.loss_fn(learner.apply(p, task.query_x), task.query_y))(phi))[0]
    want = np.linalg.solve(np.eye(flat_phi.size) + np.asarray(hess) / 50.0, np.asarray(gq))
    got = jax.flatten_util.ravel_pytree(g["model"])[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
