"""Reptile: the meta-update against a plain loop, minibatches, schedules."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax as mj

from metajax.core import learner as learner_lib
from metajax import configs
from metajax import models
from metajax.algorithms import registry
from metajax.core import task_map
from metajax.data.sinusoid import sample_tasks
from metajax.algorithms.reptile import Reptile, minibatch_indices, task_key
from metajax.core.tasks import task_slice


def _np_tree(tree):
  return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


@pytest.mark.parametrize("inner_optimizer, batch", [("adam", 4), ("sgd", None)])
def test_meta_update_equals_plain_loop(inner_optimizer, batch):
  model = models.MLP(hidden=(6,))
  tasks = sample_tasks(jax.random.PRNGKey(0), 3, 6, 5)
  steps, lr, eps, seed = 3, 0.02, 0.3, 7
  lrn = Reptile(model, inner_optimizer=inner_optimizer, inner_lr=lr,
                inner_steps=steps, inner_batch_size=batch, seed=seed)
  opt = optax.sgd(eps)
  state = learner_lib.init_state(lrn, opt, jax.random.PRNGKey(1),
                                 task_slice(tasks, 0))
  new_state, _ = learner_lib.make_meta_step(lrn, opt)(state, tasks)

  # Reference: per task, a Python loop of Adam(b1 = 0) / SGD steps written
  # out in numpy; then theta + eps * (mean_i phi_i - theta).
  theta = _np_tree(state.params["model"])
  grad = jax.grad(lambda p, x, y: jnp.mean((model.apply({"params": p}, x)
                                           - y) ** 2))
  phis = []
  for i in range(3):
    t = task_slice(tasks, i)
    sx, sy = np.asarray(t.support_x), np.asarray(t.support_y)
    if batch is None:
      idx = np.tile(np.arange(6), (steps, 1))
    else:
      idx = np.asarray(minibatch_indices(task_key(seed, t.support_x), 6,
                                         batch, steps))
    phi = theta
    v = jax.tree_util.tree_map(np.zeros_like, theta)
    for k in range(steps):
      g = _np_tree(grad(jax.tree_util.tree_map(jnp.float32, phi),
                        sx[idx[k]], sy[idx[k]]))
      if inner_optimizer == "adam":
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        corr = 1 - 0.999 ** (k + 1)
        phi = jax.tree_util.tree_map(
            lambda p, g, v: p - lr * g / (np.sqrt(v / corr) + 1e-8), phi, g, v)
      else:
        phi = jax.tree_util.tree_map(lambda p, g: p - lr * g, phi, g)
    phis.append(phi)
  mean_phi = jax.tree_util.tree_map(lambda *a: np.mean(a, axis=0), *phis)
  want = jax.tree_util.tree_map(lambda t, p: t + eps * (p - t), theta, mean_phi)
  for got, ref in zip(jax.tree_util.tree_leaves(new_state.params["model"]),
                      jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(np.asarray(got), ref, rtol=2e-5, atol=2e-6)
  # the update moved the weights (the test is not vacuous)
  moved = max(float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(
      jax.tree_util.tree_leaves(new_state.params["model"]),
      jax.tree_util.tree_leaves(theta)))
  assert moved > 1e-4


def test_minibatch_protocol():
  key = jax.random.PRNGKey(3)
  idx = np.asarray(minibatch_indices(key, 6, 4, 9))  # 36 draws = 6 passes
  assert idx.shape == (9, 4) and idx.dtype == np.int32
  passes = idx.reshape(-1, 6)
  for row in passes:  # every pass is a permutation of the 6 examples
    np.testing.assert_array_equal(np.sort(row), np.arange(6))
  assert len({tuple(r) for r in passes}) > 1  # reshuffled between passes
  rep = np.asarray(minibatch_indices(key, 6, 4, 20, replacement=True))
  assert all(len(set(r)) == 4 for r in rep)  # distinct within a batch
  assert minibatch_indices(key, 6, 4, 0).shape == (0, 4)
  with pytest.raises(ValueError, match="larger than the 6 support"):
    minibatch_indices(key, 6, 7, 2, replacement=True)
  with pytest.raises(ValueError, match="batch size must be >= 1"):
    minibatch_indices(key, 6, 0, 2)
  # per-task keys: different tasks differ, the same task repeats
  x = jnp.arange(12.0).reshape(6, 2)
  assert np.array_equal(task_key(0, x), task_key(0, x))
  assert not np.array_equal(task_key(0, x), task_key(0, x + 1))
  assert not np.array_equal(task_key(0, x), task_key(1, x))


def test_outer_optimizer_anneals_meta_step_linearly():
  opt = Reptile.outer_optimizer(meta_step=1.0, meta_step_final=0.2,
                                meta_iters=4)
  params = {"w": jnp.zeros(())}
  state = opt.init(params)
  seen = []
  for _ in range(6):
    # pseudo-gradient theta - phi = -1: the update is +eps_i
    upd, state = opt.update({"w": -jnp.ones(())}, state, params)
    seen.append(float(upd["w"]))
  np.testing.assert_allclose(seen, [1.0, 0.8, 0.6, 0.4, 0.2, 0.2], rtol=1e-6)
  paper = Reptile.outer_optimizer("miniimagenet_5way_1shot")
  assert isinstance(paper, optax.GradientTransformation)
  with pytest.raises(ValueError, match="unknown paper setting"):
    Reptile.outer_optimizer("cifar")


def test_meta_training_lowers_loss_and_evaluate_uses_eval_protocol():
  lrn = Reptile(models.MLP(hidden=(32, 32)), inner_lr=0.02, inner_steps=8,
                inner_batch_size=5, eval_inner_steps=6,
                eval_inner_batch_size=4)
  opt = Reptile.outer_optimizer(meta_step=1.0, meta_step_final=0.5,
                                meta_iters=100)
  held = sample_tasks(jax.random.PRNGKey(0), 32, 10, 10)
  state = learner_lib.init_state(lrn, opt, jax.random.PRNGKey(1),
                                 task_slice(held, 0))
  step = learner_lib.make_meta_step(lrn, opt)

  task = task_slice(held, 1)

  @jax.jit
  def held_out(params):
    loss = task_map.mean_over_tasks(
        lambda t: lrn.task_grad(params, t)[0][0], held)
    curve = lrn.evaluate(params, task)
    phi = lrn.adapt(params, task.support_x, task.support_y, steps=6,
                    batch_size=4)
    final = lrn.loss_fn(lrn.apply(phi, task.query_x), task.query_y)
    return loss, curve, final

  before, _, _ = held_out(state.params)
  for i in range(100):
    state, _ = step(state, sample_tasks(jax.random.PRNGKey(100 + i), 8, 10, 10))
  after, curve, final = held_out(state.params)
  assert float(after) < 0.6 * float(before)
  # evaluate: eval_inner_steps steps on minibatches of eval_inner_batch_size
  assert curve["loss"].shape == (7,)
  np.testing.assert_allclose(curve["loss"][-1], final, rtol=1e-5)


@pytest.mark.parametrize("kw, msg", [
    (dict(inner_optimizer="rmsprop"), "unknown inner optimizer"),
    (dict(inner_optimizer=3), "inner_optimizer must be"),
    (dict(inner_batch_size=0), "inner_batch_size"),
    (dict(eval_inner_steps=-1), "eval_inner_steps"),
])
def test_bad_config_raises(kw, msg):
  with pytest.raises(ValueError, match=msg):
    Reptile(models.MLP(), **kw)


def test_paper_defaults():
  lrn = registry.make("reptile", models.Conv4(), setting="omniglot_20way_1shot")
  assert isinstance(lrn, Reptile)
  assert (lrn.inner_steps, lrn.inner_batch_size, lrn.inner_lr) == (10, 20, 5e-4)
  assert lrn.eval_inner_steps == 50 and lrn.loss == "cross_entropy"
  outer = configs.get("reptile", "miniimagenet_5way_1shot").outer
  assert (outer["train_shots"], outer["meta_batch"]) == (15, 5)
  with pytest.raises(ValueError, match="unknown paper setting"):
    registry.make("reptile", models.Conv4(), setting="cifar")


@pytest.mark.parametrize("field", ["learn_inner_lr", "first_order"])
def test_maml_only_fields_are_not_reptiles(field):
  # Reptile shares MAML's inner loop, not MAML: no derivative order or
  # learned rates to switch off.
  with pytest.raises(TypeError, match=field):
    Reptile(models.MLP(), **{field: "scalar" if field == "learn_inner_lr"
                             else True})
  assert not isinstance(Reptile(models.MLP()), mj.MAML)


def _adam_b1_0_loop(theta, grad, sx, sy, idx, lr, v, count):
  """Reference inner loop: TF Adam(beta1=0) from second moments ``v`` at
  step ``count``, in float64 numpy; returns ``(phi, v, count)``."""
  phi = theta
  for k in range(idx.shape[0]):
    g = _np_tree(grad(jax.tree_util.tree_map(jnp.float32, phi),
                      sx[idx[k]], sy[idx[k]]))
    v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
    count += 1
    corr = 1 - 0.999 ** count
    phi = jax.tree_util.tree_map(
        lambda p, g, v: p - lr * g / (np.sqrt(v / corr) + 1e-8), phi, g, v)
  return phi, v, count


def test_persistent_inner_state_carries_adam_moments_like_a_plain_loop():
  # Two meta-steps and an evaluation against the reference: every task of
  # a meta-batch starts from the carried moments, the carried state becomes
  # the tasks' mean, and test tasks adapt from the trained state.
  model = models.MLP(hidden=(5,))
  steps, lr, eps, seed, n = 3, 0.02, 0.5, 4, 3
  lrn = Reptile(model, inner_lr=lr, inner_steps=steps, inner_batch_size=4,
                eval_inner_batch_size=4, eval_inner_steps=2, seed=seed,
                persistent_inner_state=True)
  opt = optax.sgd(eps)
  batches = [sample_tasks(jax.random.PRNGKey(10 + s), n, 6, 5)
             for s in range(2)]
  state = learner_lib.init_state(lrn, opt, jax.random.PRNGKey(1),
                                 task_slice(batches[0], 0))
  grad = jax.grad(lambda p, x, y: jnp.mean((model.apply({"params": p}, x)
                                           - y) ** 2))
  theta = _np_tree(state.params["model"])
  v = jax.tree_util.tree_map(np.zeros_like, theta)
  count = 0
  step = learner_lib.make_meta_step(lrn, opt)
  for tasks in batches:
    state, metrics = step(state, tasks)
    assert "inner_state" not in metrics
    outs = []
    for i in range(n):
      t = task_slice(tasks, i)
      idx = np.asarray(minibatch_indices(task_key(seed, t.support_x), 6, 4,
                                         steps))
      outs.append(_adam_b1_0_loop(theta, grad, np.asarray(t.support_x),
                                  np.asarray(t.support_y), idx, lr, v, count))
    mean_phi = jax.tree_util.tree_map(lambda *a: np.mean(a, axis=0),
                                      *[o[0] for o in outs])
    theta = jax.tree_util.tree_map(lambda t, p: t + eps * (p - t), theta,
                                   mean_phi)
    v = jax.tree_util.tree_map(lambda *a: np.mean(a, axis=0),
                               *[o[1] for o in outs])
    count += steps
  adam_state = state.model_state["inner_state"][0]
  assert int(adam_state.count) == count == 2 * steps
  for got, ref in zip(jax.tree_util.tree_leaves(adam_state.nu),
                      jax.tree_util.tree_leaves(v)):
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-4, atol=1e-12)
  for got, ref in zip(jax.tree_util.tree_leaves(state.params["model"]),
                      jax.tree_util.tree_leaves(theta)):
    np.testing.assert_allclose(np.asarray(got), ref, rtol=2e-5, atol=2e-6)

  # Evaluation adapts from the trained moments, not fresh ones.
  test = task_slice(sample_tasks(jax.random.PRNGKey(99), 1, 6, 5), 0)
  bound = lrn.with_model_state(state.model_state)
  phi = bound.adapt(state.params, test.support_x, test.support_y, steps=2)
  idx = np.asarray(minibatch_indices(task_key(seed, test.support_x), 6, 4, 2))
  want, _, _ = _adam_b1_0_loop(theta, grad, np.asarray(test.support_x),
                               np.asarray(test.support_y), idx, lr, v, count)
  fresh, _, _ = _adam_b1_0_loop(
      theta, grad, np.asarray(test.support_x), np.asarray(test.support_y),
      idx, lr, jax.tree_util.tree_map(np.zeros_like, v), 0)
  for got, ref, other in zip(jax.tree_util.tree_leaves(phi),
                             jax.tree_util.tree_leaves(want),
                             jax.tree_util.tree_leaves(fresh)):
    np.testing.assert_allclose(np.asarray(got), ref, rtol=2e-5, atol=2e-6)
  assert max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree_util.tree_leaves(want), jax.tree_util.tree_leaves(fresh))) > 1e-4
  result = mj.evaluate(lrn, state.params,
                       sample_tasks(jax.random.PRNGKey(5), 4, 6, 5),
                       num_tasks=4, batch_size=2,
                       model_state=state.model_state)
  assert np.isfinite(result.mean)


def test_persistent_inner_state_needs_binding():
  lrn = Reptile(models.MLP(hidden=(4,)), persistent_inner_state=True)
  tasks = sample_tasks(jax.random.PRNGKey(0), 2, 10, 5)
  params = lrn.init(jax.random.PRNGKey(0), task_slice(tasks, 0))
  with pytest.raises(ValueError, match="with_model_state"):
    lrn.evaluate(params, task_slice(tasks, 0))


def test_persistent_inner_state_resumes_exactly(tmp_path):
  lrn = Reptile(models.MLP(hidden=(4,)), inner_steps=2, inner_batch_size=5,
                persistent_inner_state=True)
  opt = lrn.outer_optimizer(meta_iters=4)
  sampler = lambda key: sample_tasks(key, 2, 10, 5)
  kw = dict(num_steps=4, steps_per_call=1, progress=False)
  whole, _ = mj.fit(lrn, opt, sampler, **kw)
  mj.fit(lrn, opt, sampler, checkpoint_dir=tmp_path, checkpoint_every=2,
         **{**kw, "num_steps": 2})
  resumed, _ = mj.fit(lrn, opt, sampler, checkpoint_dir=tmp_path,
                      checkpoint_every=2, **kw)
  assert int(resumed.model_state["inner_state"][0].count) == 8
  for a, b in zip(jax.tree_util.tree_leaves(whole),
                  jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
