"""The meta-gradient comparison tool against hand-computed directions.

On linear regression every direction has a closed form: with ``X``
augmented by a column of ones, ``L(w) = mean((X w - y)^2)``, gradient
``(2/n) X^T (X w - y)`` and constant Hessian ``H = (2/n) X^T X``.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax as mj
from metajax.evaluation import meta_gradients as mg
from metajax.core.tasks import Task


def _problem(n_tasks=3, n=6, d=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n_tasks, 2 * n, d)).astype(np.float32)
  y = (x @ rng.normal(size=(d, 1)) + 0.3).astype(np.float32)
  return Task(jnp.asarray(x[:, :n]), jnp.asarray(y[:, :n]),
              jnp.asarray(x[:, n:]), jnp.asarray(y[:, n:]))


def _np_w(params):
  m = params["model"]["head"]
  return np.concatenate([np.asarray(m["kernel"], np.float64)[:, 0],
                         np.asarray(m["bias"], np.float64)])


def _aug(x):
  x = np.asarray(x, np.float64)
  return np.concatenate([x, np.ones((len(x), 1))], 1)


def _grad(w, x, y):
  xa = _aug(x)
  return 2.0 / len(xa) * xa.T @ (xa @ w - np.asarray(y, np.float64)[:, 0])


def _hess(x):
  xa = _aug(x)
  return 2.0 / len(xa) * xa.T @ xa


def _reference(tasks, w, lr, steps, lam):
  """Per-direction meta-gradients, averaged over tasks, in float64."""
  out = {k: [] for k in mg.DIRECTIONS}
  for i in range(tasks.support_x.shape[0]):
    sx, sy = tasks.support_x[i], tasks.support_y[i]
    qx, qy = tasks.query_x[i], tasks.query_y[i]
    h = _hess(sx)
    phi, jac, support_grads = w, np.eye(len(w)), []
    for _ in range(steps):
      g = _grad(phi, sx, sy)
      support_grads.append(g)
      phi = phi - lr * g
      jac = (np.eye(len(w)) - lr * h) @ jac
    gq = _grad(phi, qx, qy)
    out["exact"].append(jac.T @ gq)
    out["first_order"].append(gq)
    out["reptile"].append(np.mean(support_grads, 0) if steps else 0 * w)
    prox = w
    for _ in range(steps):
      prox = prox - lr * (_grad(prox, sx, sy) + lam * (prox - w))
    out["implicit"].append(np.linalg.solve(np.eye(len(w)) + h / lam,
                                           _grad(prox, qx, qy)))
  return {k: np.mean(v, 0) for k, v in out.items()}


def _cos(a, b):
  return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


@pytest.mark.parametrize("steps", [1, 3])
def test_directions_match_closed_forms(steps):
  tasks = _problem()
  lr, lam = 0.1, 2.0
  learner = mj.MAML(mj.models.MLP(hidden=(), num_outputs=1),
                    inner_steps=steps, inner_lr=lr)
  params = learner.init(jax.random.PRNGKey(0), jax.tree_util.tree_map(
      lambda a: a[0], tasks))
  # cg_steps = 4 = the dimension: conjugate gradient solves exactly
  c = mg.compare_meta_gradients(learner, params, tasks, lam=lam, cg_steps=4,
                                repeats=1)
  ref = _reference(tasks, _np_w(params), lr, steps, lam)
  assert c.directions == mg.DIRECTIONS and not c.skipped
  assert c.tensors == ("head/bias", "head/kernel")
  for d in mg.DIRECTIONS:
    want_cos = _cos(ref[d], ref["exact"])
    want_rel = (np.linalg.norm(ref[d] - ref["exact"])
                / np.linalg.norm(ref["exact"]))
    assert c.cosine[d][mg.ALL] == pytest.approx(want_cos, abs=1e-5), d
    assert c.relative_difference[d][mg.ALL] == pytest.approx(
        want_rel, rel=1e-4, abs=1e-5), d
    assert c.norm[d][mg.ALL] == pytest.approx(np.linalg.norm(ref[d]),
                                              rel=1e-4), d
    # the bias tensor alone: the last coordinate
    assert c.norm[d]["head/bias"] == pytest.approx(abs(ref[d][-1]), rel=1e-4)
    assert c.seconds[d] > 0
    assert c.peak_bytes[d] is None or c.peak_bytes[d] > 0
  # the directions differ (the comparison is not vacuous)
  assert c.cosine["first_order"][mg.ALL] < 1 - 1e-4
  assert c.cosine["exact"][mg.ALL] == pytest.approx(1.0, abs=1e-6)
  assert "| first_order | head/kernel |" in c.table()
  row = c.flat()
  assert row["implicit/cosine/all"] == c.cosine["implicit"][mg.ALL]


def test_zero_inner_steps_first_order_equals_exact():
  tasks = _problem()
  learner = mj.MAML(mj.models.MLP(hidden=(5,), num_outputs=1),
                    inner_steps=0)
  params = learner.init(jax.random.PRNGKey(1), jax.tree_util.tree_map(
      lambda a: a[0], tasks))
  c = mg.compare_meta_gradients(learner, params, tasks,
                                directions=("exact", "first_order"),
                                repeats=0)
  for t in (mg.ALL,) + c.tensors:
    assert c.cosine["first_order"][t] == pytest.approx(1.0, abs=1e-6)
    assert c.relative_difference["first_order"][t] == 0.0
  assert math.isnan(c.seconds["exact"])


def test_directions_that_do_not_apply_are_skipped_with_the_reason():
  tasks = _problem()
  model = mj.models.MLP(hidden=(5,), num_outputs=1)
  anil = mj.MAML(model, adapt_mask=lambda path: path.startswith("head"))
  params = anil.init(jax.random.PRNGKey(0), jax.tree_util.tree_map(
      lambda a: a[0], tasks))
  c = mg.compare_meta_gradients(anil, params, tasks, repeats=0)
  assert set(c.skipped) == {"implicit"} and "masks" in c.skipped["implicit"]
  meta_sgd = mj.MAML(model, learn_inner_lr="per_param")
  params = meta_sgd.init(jax.random.PRNGKey(0), jax.tree_util.tree_map(
      lambda a: a[0], tasks))
  c = mg.compare_meta_gradients(meta_sgd, params, tasks, repeats=0)
  assert c.directions == ("exact", "first_order")
  assert set(c.skipped) == {"implicit", "reptile"}
  with pytest.raises(ValueError, match="reference 'implicit'"):
    mg.compare_meta_gradients(meta_sgd, params, tasks, reference="implicit",
                              repeats=0)
  with pytest.raises(ValueError, match="MAML-style"):
    mg.direction_learners(mj.ProtoNet(model))
  with pytest.raises(ValueError, match="unknown directions"):
    mg.direction_learners(anil, ("exact", "second"))


def test_track_compares_along_the_run_that_fit_makes():
  tasks = _problem(seed=5)
  learner = mj.MAML(mj.models.MLP(hidden=(4,), num_outputs=1), inner_lr=0.05)
  opt = optax.adam(1e-2)
  sampler = lambda key: _problem_traced(key)
  seen = []
  state, rows = mg.track(
      learner, opt, sampler, tasks, num_steps=5, every=2,
      on_comparison=lambda step, c: seen.append(step),
      compare_kwargs={"directions": ("exact", "first_order"), "repeats": 0})
  assert [s for s, _ in rows] == seen == [0, 2, 4, 5]
  whole, _ = mj.fit(learner, opt, sampler, num_steps=5, progress=False)
  for a, b in zip(jax.tree_util.tree_leaves(state.params),
                  jax.tree_util.tree_leaves(whole.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert rows[0][1].cosine["exact"][mg.ALL] == pytest.approx(1.0, abs=1e-6)
  with pytest.raises(ValueError, match="every"):
    mg.track(learner, opt, sampler, tasks, num_steps=1, every=0)


def _problem_traced(key, n_tasks=3, n=6, d=3):
  kx, kw = jax.random.split(key)
  x = jax.random.normal(kx, (n_tasks, 2 * n, d))
  y = x @ jax.random.normal(kw, (n_tasks, d, 1)) + 0.3
  return Task(x[:, :n], y[:, :n], x[:, n:], y[:, n:])
