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
    (dict(lam_damping=-1.0), "lam_damping"),
    (dict(inner_optimizer="adam"), "inner_optimizer"),
    (dict(inner_loop="sgd"), "inner_loop must be one of"),
    (dict(eval_lam=-0.5), "eval_lam"),
    (dict(eval_lam=True), "eval_lam"),
    (dict(eval_lam="0"), "eval_lam"),
    (dict(inner_loop="code", inner_optimizer=optax.sgd(0.1)),
     "inner_optimizer applies to inner_loop='proximal'"),
    (dict(inner_loop="code", inner_lr=0.5, lam=2.0), "inner_lr \\* lam < 1"),
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
    g = jax.jit(jax.grad(lambda p: learner.task_loss(p, task)[0]))(params)
    phi = learner.adapt(params, task.support_x, task.support_y)
    flat_phi, unravel = jax.flatten_util.ravel_pytree(phi)
    hess = jax.jit(jax.jacrev(jax.jacrev(lambda f: learner.support_loss(
        unravel(f), task.support_x, task.support_y))))(flat_phi)
    gq = jax.flatten_util.ravel_pytree(jax.grad(
        lambda p: learner.loss_fn(learner.apply(p, task.query_x), task.query_y))(phi))[0]
    want = np.linalg.solve(np.eye(flat_phi.size) + np.asarray(hess) / 50.0, np.asarray(gq))
    got = jax.flatten_util.ravel_pytree(g["model"])[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


# -- the official code's variant (aravindr93/imaml_dev) ---------------------
def _tiny_regression(seed=0):
  """A float64 MLP (13 parameters) and one sinusoid task; call under x64."""
  model = models.MLP(hidden=(4,), activation=nn.tanh)
  task = task_slice(sample_tasks(jax.random.PRNGKey(seed), 1, 6, 7,
                                 dtype=jnp.float64), 0)
  task = Task(task.support_x / 5, task.support_y, task.query_x / 5,
              task.query_y)

  def loss(p, x, y):
    return jnp.mean((model.apply({"params": p}, x) - y) ** 2)

  return model, task, loss


def _dense_hessian(loss, phi, x, y):
  flat_phi, unravel = jax.flatten_util.ravel_pytree(phi)
  return np.asarray(jax.jit(jax.hessian(
      lambda f: loss(unravel(f), x, y)))(flat_phi))


def test_code_inner_loop_is_sgd_then_one_pull_back_step():
  with jax.enable_x64(True):
    model, task, loss = _tiny_regression()
    lr, lam, steps = 0.1, 2.0, 16
    lrn = IMAML(model, inner_steps=steps, inner_lr=lr, lam=lam,
                inner_loop="code")
    params = _f64(lrn.init(jax.random.PRNGKey(1), task))
    theta = params["model"]

    # Reference: a plain Python loop of SGD on the support loss, then one
    # SGD step on lam/2 ||w - theta||^2 at the same rate.
    w, ws = theta, []
    grad = jax.jit(jax.grad(loss))
    for _ in range(steps):
      w = jax.tree_util.tree_map(lambda a, g: a - lr * g, w,
                                 grad(w, task.support_x, task.support_y))
      ws.append(w)
    pull = lambda w: jax.tree_util.tree_map(
        lambda a, t: a - lr * lam * (a - t), w, theta)
    want = pull(w)
    # = theta + 0.8 (w - theta) at lr 0.1, lam 2
    np.testing.assert_allclose(
        _tree_vec(want),
        _tree_vec(theta) + 0.8 * (_tree_vec(w) - _tree_vec(theta)),
        rtol=1e-12, atol=1e-14)

    phi = lrn.adapt(params, task.support_x, task.support_y)
    np.testing.assert_allclose(_tree_vec(phi), _tree_vec(want), rtol=1e-12,
                               atol=1e-14)

    # Curves: point t is what ``steps=t`` returns (pulled back), in
    # ``solve``'s trajectory and in ``evaluate`` (eval_lam None: as training).
    last, traj = lrn.solve(theta, task.support_x, task.support_y,
                           return_trajectory=True)
    np.testing.assert_allclose(_tree_vec(last), _tree_vec(want), rtol=1e-12)
    for t in (0, 4, steps - 1):
      np.testing.assert_allclose(
          _tree_vec(jax.tree_util.tree_map(lambda a: a[t], traj)),
          _tree_vec(pull(ws[t])), rtol=1e-12, atol=1e-14)
    curve = jax.jit(lambda p: lrn.evaluate(p, task, steps=steps))(params)
    query = [float(loss(pull(p), task.query_x, task.query_y)) for p in ws]
    np.testing.assert_allclose(
        np.asarray(curve["loss"]),
        [float(loss(theta, task.query_x, task.query_y))] + query, rtol=1e-10)
    # zero steps: theta itself
    np.testing.assert_allclose(
        _tree_vec(lrn.adapt(params, task.support_x, task.support_y, steps=0)),
        _tree_vec(theta))


def test_damped_cg_operator_matches_dense_solve():
  with jax.enable_x64(True):
    model, task, loss = _tiny_regression(1)
    lam, cgd, lamd = 2.0, 1.0, 10.0
    lrn = IMAML(model, lam=lam, cg_steps=40, cg_damping=cgd,
                lam_damping=lamd, inner_loop="code")
    params = _f64(lrn.init(jax.random.PRNGKey(2), task))
    phi = lrn.adapt(params, task.support_x, task.support_y)
    hess = _dense_hessian(loss, phi, task.support_x, task.support_y)
    n = hess.shape[0]
    assert n < 40
    flat_phi, unravel = jax.flatten_util.ravel_pytree(phi)
    g = np.random.default_rng(0).normal(size=n)
    got = lrn.implicit_vjp(phi, task.support_x, task.support_y, unravel(g))
    want = np.linalg.solve((1 + cgd) * np.eye(n) + hess / (lam + lamd), g)
    np.testing.assert_allclose(_tree_vec(got), want, rtol=1e-8, atol=1e-10)
    # the undamped operator (the paper's) gives another answer
    undamped = np.linalg.solve(np.eye(n) + hess / lam, g)
    assert np.linalg.norm(undamped - want) > 0.1 * np.linalg.norm(want)


def test_code_meta_gradient_is_the_damped_solve_at_phi():
  with jax.enable_x64(True):
    model, task, loss = _tiny_regression(2)
    lam, cgd, lamd = 2.0, 1.0, 10.0
    lrn = IMAML(model, inner_steps=16, inner_lr=0.1, lam=lam, cg_steps=40,
                cg_damping=cgd, lam_damping=lamd, inner_loop="code",
                eval_lam=0.0)
    params = _f64(lrn.init(jax.random.PRNGKey(3), task))
    (value, _), grads = jax.jit(lrn.task_grad)(params, task)
    # phi of the training loop (not the test-time one: eval_lam is 0)
    phi = lrn.adapt(params, task.support_x, task.support_y)
    np.testing.assert_allclose(float(value),
                               float(loss(phi, task.query_x, task.query_y)),
                               rtol=1e-12)
    hess = _dense_hessian(loss, phi, task.support_x, task.support_y)
    gq = _tree_vec(jax.grad(loss)(phi, task.query_x, task.query_y))
    n = hess.shape[0]
    want = np.linalg.solve((1 + cgd) * np.eye(n) + hess / (lam + lamd),
                           np.asarray(gq))
    np.testing.assert_allclose(_tree_vec(grads["model"]), want, rtol=1e-8,
                               atol=1e-12)


def test_eval_lam_zero_adapts_by_plain_sgd_and_positive_is_proximal():
  with jax.enable_x64(True):
    model, task, loss = _tiny_regression(3)
    lr, steps = 0.1, 6
    params = None
    grad = jax.jit(jax.grad(loss))
    for inner_loop in ("code", "proximal"):
      lrn = IMAML(model, inner_steps=steps, inner_lr=lr, lam=2.0,
                  inner_loop=inner_loop, eval_lam=0.0)
      if params is None:
        params = _f64(lrn.init(jax.random.PRNGKey(4), task))
        theta = params["model"]
        w, plain = theta, []
        for _ in range(steps):
          w = jax.tree_util.tree_map(lambda a, g: a - lr * g, w,
                                     grad(w, task.support_x, task.support_y))
          plain.append(w)
      got = lrn.adapt(params, task.support_x, task.support_y, evaluation=True)
      np.testing.assert_allclose(_tree_vec(got), _tree_vec(plain[-1]),
                                 rtol=1e-12, atol=1e-14)
      # eval steps default to inner_steps
      curve = jax.jit(lambda p: lrn.evaluate(p, task))(params)
      np.testing.assert_allclose(
          np.asarray(curve["loss"]),
          [float(loss(p, task.query_x, task.query_y))
           for p in [theta] + plain], rtol=1e-10)
      # training still uses the training loop
      train = lrn.adapt(params, task.support_x, task.support_y)
      assert float(jnp.max(jnp.abs(_tree_vec(train)
                                   - _tree_vec(plain[-1])))) > 1e-6

    # eval_lam > 0: gradient steps on G with that lambda (the official
    # measure_accuracy.py --lam > 0), whatever the training loop
    lrn = IMAML(model, inner_steps=steps, inner_lr=lr, lam=2.0,
                inner_loop="code", eval_lam=0.5)
    ref = IMAML(model, inner_steps=steps, inner_lr=lr, lam=0.5)
    np.testing.assert_allclose(
        _tree_vec(lrn.adapt(params, task.support_x, task.support_y,
                            evaluation=True)),
        _tree_vec(ref.adapt(params, task.support_x, task.support_y)),
        rtol=1e-12)
    assert lrn.inner_rule(evaluation=True) == ("proximal", 0.5)
    assert lrn.inner_rule() == ("code", 2.0)


def test_code_variant_meta_batch_under_jit_and_vmap():
  model = models.MLP(hidden=(8,), num_outputs=3)
  rng = jax.random.PRNGKey(0)
  x = jax.random.normal(rng, (2, 12, 4))
  y = jnp.tile(jnp.arange(3), (2, 4))
  tasks = Task(x[:, :6], y[:, :6], x[:, 6:], y[:, 6:])
  lrn = IMAML(model, loss="cross_entropy", inner_steps=3, ways=3,
              inner_loop="code", cg_damping=1.0, lam_damping=10.0,
              eval_lam=0.0)
  params = lrn.init(rng, task_slice(tasks, 0))

  @jax.jit
  def run(params):
    (_, metrics), grads = lrn.meta_grad(params, tasks)
    return metrics, grads, lrn.evaluate(params, task_slice(tasks, 0))

  metrics, grads, curve = run(params)
  assert "accuracy" in metrics
  assert all(bool(jnp.all(jnp.isfinite(g)))
             for g in jax.tree_util.tree_leaves(grads))
  assert curve["accuracy"].shape == (4,)


def test_omniglot_settings_are_the_official_code_and_paper_equations_remain():
  from metajax import configs
  from metajax.configs import imaml as imaml_configs
  for key in ("omniglot_5way_1shot", "omniglot_20way_5shot"):
    s = configs.get("imaml", key)
    assert s.outer["adam_eps"] == 1e-3 and s.outer["meta_batch"] == 32
    assert "310" in s.note and "measure_accuracy.py" in s.source
    assert (s.protocol["filters"], s.protocol["downsample"],
            s.protocol["norm"]) == (64, "stride", "transductive")
    assert s.published[0].value == {"omniglot_5way_1shot": 99.16,
                                    "omniglot_20way_5shot": 98.69}[key]
    lrn = registry.make("imaml", models.Conv4(), setting=key)
    assert (lrn.inner_loop, lrn.cg_damping, lrn.lam_damping, lrn.eval_lam,
            lrn.lam, lrn.inner_lr, lrn.cg_steps) == (
                "code", 1.0, 10.0, 0.0, 2.0, 0.1, 5)
    paper = registry.make("imaml", models.Conv4(), setting=key,
                          **imaml_configs.PAPER_EQUATIONS)
    assert (paper.inner_loop, paper.cg_damping, paper.lam_damping,
            paper.eval_lam) == ("proximal", 0.0, 0.0, None)
  assert registry.make("imaml", models.Conv4(),
                       setting="omniglot_5way_1shot").inner_steps == 16
  mini = registry.make("imaml", models.Conv4(),
                       setting="miniimagenet_5way_1shot")
  assert (mini.inner_loop, mini.lam_damping, mini.eval_lam) == (
      "proximal", 0.0, None)
  # the class defaults are the paper's equations
  d = IMAML(models.MLP())
  assert (d.inner_loop, d.cg_damping, d.lam_damping, d.eval_lam) == (
      "proximal", 0.0, 0.0, None)
