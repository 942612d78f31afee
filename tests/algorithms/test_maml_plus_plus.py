"""MAML++: schedules, per-step batch norm, derivative-order annealing."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import models
from metajax.algorithms import registry
from metajax.core import task_map
from metajax.data.sinusoid import sample_tasks
from metajax.algorithms.maml import MAML
import metajax as mj
from metajax.algorithms.maml_plus_plus import (MAMLPlusPlus, is_norm_path,
                                               msl_weights)
from metajax.models import TransductiveBatchNorm
from metajax.core.tasks import Task, task_slice


class BNNet(nn.Module):
  """Dense -> transductive batch norm -> tanh -> Dense head: the per-step BN
  machinery of Conv4 at a fraction of its compile time."""
  num_outputs: int = 3

  @nn.compact
  def __call__(self, x):
    # no bias before batch norm: its exact gradient is zero, and Adam turns
    # round-off there into full-size steps that differ between programs
    x = nn.Dense(8, use_bias=False, name="dense0")(x)
    x = TransductiveBatchNorm(name="norm0")(x)
    return nn.Dense(self.num_outputs, name="head")(nn.tanh(x))


def _f64(tree):
  return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), tree)


def _flat(tree):
  return np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(tree)])


def cluster_tasks(key, num_tasks, ways=3, shots=2, query=2, dim=6,
                  dtype=jnp.float32):
  """Tiny few-shot tasks: each class a random centre plus noise."""
  k1, k2, k3 = jax.random.split(key, 3)
  centres = jax.random.normal(k1, (num_tasks, ways, dim), dtype)
  sy = jnp.tile(jnp.arange(ways), shots)
  qy = jnp.tile(jnp.arange(ways), query)
  sx = centres[:, sy] + 0.5 * jax.random.normal(
      k2, (num_tasks, ways * shots, dim), dtype)
  qx = centres[:, qy] + 0.5 * jax.random.normal(
      k3, (num_tasks, ways * query, dim), dtype)
  return Task(sx, jnp.broadcast_to(sy, (num_tasks, ways * shots)), qx,
              jnp.broadcast_to(qy, (num_tasks, ways * query)))


def test_msl_weights_follow_the_schedule():
  k, e_max = 5, 10
  for epoch in range(e_max):
    w = msl_weights(epoch, k, e_max)
    assert w.shape == (k,)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)
  # uniform at the start; each epoch moves 1/(K E) from every earlier step
  # to the last one, never below 0.03/K
  np.testing.assert_allclose(msl_weights(0, k, e_max), [0.2] * 5)
  np.testing.assert_allclose(msl_weights(5, k, e_max),
                             [0.1, 0.1, 0.1, 0.1, 0.6])
  np.testing.assert_allclose(msl_weights(9, k, e_max),
                             [0.02, 0.02, 0.02, 0.02, 0.92])
  np.testing.assert_allclose(msl_weights(20, k, e_max),
                             [0.006] * 4 + [1 - 4 * 0.006])
  ws = np.stack([msl_weights(e, k, e_max) for e in range(e_max)])
  assert np.all(np.diff(ws[:, -1]) > 0) and np.all(np.diff(ws[:, 0]) < 0)
  np.testing.assert_allclose(msl_weights(3, 1, e_max), [1.0])
  # per-iteration view: epochs of 4 iterations; last step only after E
  lrn = MAMLPlusPlus(models.MLP(), inner_steps=5, msl_epochs=e_max,
                     iters_per_epoch=4)
  np.testing.assert_allclose(lrn.loss_weights_at(4 * 5 + 3),
                             msl_weights(5, k, e_max))
  np.testing.assert_allclose(lrn.loss_weights_at(4 * e_max), [0, 0, 0, 0, 1])
  off = MAMLPlusPlus(models.MLP(), inner_steps=5, multi_step_loss=False)
  np.testing.assert_allclose(off.loss_weights_at(0), [0, 0, 0, 0, 1])
  # the traced schedule (used on device) is the same
  its = np.arange(0, 4 * (e_max + 2))
  for l in (lrn, off):
    traced = jax.jit(jax.vmap(l.loss_weights_traced))(jnp.asarray(its))
    np.testing.assert_allclose(
        traced, np.stack([l.loss_weights_at(i) for i in its]), atol=1e-6)
  with pytest.raises(ValueError, match="msl_epochs"):
    msl_weights(0, 5, 0)


def _mlp_setup():
  model = models.MLP(hidden=(5, 5), activation=nn.tanh)
  task = task_slice(sample_tasks(jax.random.PRNGKey(0), 1, 6, 7,
                                 dtype=jnp.float64), 0)
  params = _f64(MAML(model).init(jax.random.PRNGKey(1), task))
  return model, task, params


def test_one_step_without_annealing_equals_maml():
  with jax.enable_x64(True):
    model, task, params = _mlp_setup()
    pp = MAMLPlusPlus(model, inner_steps=1, inner_lr=0.05, learn_inner_lr=None,
                      multi_step_loss=False, first_order_epochs=0)
    maml = MAML(model, inner_steps=1, inner_lr=0.05)

    @jax.jit
    def both(params):
      return pp.task_grad(params, task), maml.task_grad(params, task)

    ((l1, m1), g1), ((l2, _), g2) = both(params)
    np.testing.assert_allclose(float(l1), float(l2), rtol=1e-12)
    np.testing.assert_allclose(_flat(g1), _flat(g2), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(float(m1["msl_loss"]), float(l2), rtol=1e-12)


def test_derivative_order_annealing_switches_first_to_second_order():
  with jax.enable_x64(True):
    model, task, params = _mlp_setup()
    pp = MAMLPlusPlus(model, inner_steps=2, inner_lr=0.05, learn_inner_lr=None,
                      multi_step_loss=False, first_order_epochs=2,
                      iters_per_epoch=3)
    assert pp.phase(5) == (True, False) and pp.phase(6) == (False, False)
    fo = MAML(model, inner_steps=2, inner_lr=0.05, first_order=True)
    so = MAML(model, inner_steps=2, inner_lr=0.05)

    @jax.jit
    def grads(params, traced_iteration):
      # the iteration as a Python int (phase fixed when tracing) and traced
      # (derivative order picked on the device), per task and batched
      batch = jax.tree_util.tree_map(lambda a: a[None], task)
      return ([pp.task_grad(params, task, iteration=i)[1] for i in (5, 6)] +
              [pp.task_grad(params, task, iteration=traced_iteration + d)[1]
               for d in (0, 1)] +
              [pp.meta_grad(params, batch, iteration=traced_iteration + d)[1]
               for d in (0, 1)] +
              [l.task_grad(params, task)[1] for l in (fo, so)])

    (g_early, g_late, t_early, t_late, b_early, b_late, g_fo,
     g_so) = grads(params, jnp.asarray(5))
    for early, late in ((g_early, g_late), (t_early, t_late),
                        (b_early, b_late)):
      np.testing.assert_allclose(_flat(early), _flat(g_fo), rtol=1e-10,
                                 atol=1e-14)
      np.testing.assert_allclose(_flat(late), _flat(g_so), rtol=1e-10,
                                 atol=1e-14)
    assert np.max(np.abs(_flat(g_fo) - _flat(g_so))) > 1e-6


def test_per_step_bn_lslr_and_msl_match_hand_written_reference():
  with jax.enable_x64(True):
    k = 2
    model = BNNet()
    task = task_slice(cluster_tasks(jax.random.PRNGKey(0), 1,
                                    dtype=jnp.float64), 0)
    pp = MAMLPlusPlus(model, loss="cross_entropy", inner_steps=k,
                      inner_lr=0.3, msl_epochs=4, first_order_epochs=0,
                      iters_per_epoch=1)
    params = _f64(pp.init(jax.random.PRNGKey(1), task))
    # per-step BN leaves, per-step per-tensor rates
    assert params["model"]["norm0"]["scale"].shape == (k, 8)
    assert params["inner_lr"]["dense0"]["kernel"].shape == (k,)
    # distinct rates and BN rows, so a wrong index would show
    params["inner_lr"] = jax.tree_util.tree_map(
        lambda a: a * jnp.array([1.0, 0.5]), params["inner_lr"])
    params["model"] = {
        name: ({leaf: v * jnp.array([[1.0], [1.5]]) + jnp.array([[0.0], [0.1]])
                for leaf, v in layer.items()} if name.startswith("norm")
               else layer)
        for name, layer in params["model"].items()}
    w = msl_weights(1, k, 4)

    # Reference, by hand: BN row t at step t, only non-BN tensors adapt with
    # their own rate for step t, weighted query losses after every step.
    def xent(logits, y):
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits),
                                           y[:, None], axis=1))

    def with_row(p, t):
      return {n: ({l: v[t] for l, v in layer.items()}
                  if n.startswith("norm") else layer) for n, layer in p.items()}

    def objective(model_params, lrs):
      phi = model_params
      total = 0.0
      for t in range(k):
        def support(q):
          full = {**phi, **q}
          return xent(model.apply({"params": with_row(full, t)},
                                  task.support_x), task.support_y)
        adapt = {n: l for n, l in phi.items() if not n.startswith("norm")}
        g = jax.grad(support)(adapt)
        adapt = {n: {l: v - lrs[n][l][t] * g[n][l] for l, v in layer.items()}
                 for n, layer in adapt.items()}
        phi = {**phi, **adapt}
        total = total + w[t] * xent(
            model.apply({"params": with_row(phi, t)}, task.query_x),
            task.query_y)
      return total

    @jax.jit
    def both(params):
      ref = jax.value_and_grad(objective, argnums=(0, 1))(params["model"],
                                                           params["inner_lr"])
      return ref, pp.task_grad(params, task, iteration=1)

    (ref_loss, (g_model, g_lr)), ((loss, metrics), grads) = both(params)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-10)
    np.testing.assert_allclose(_flat(grads["model"]), _flat(g_model),
                               rtol=1e-8, atol=1e-12)
    # BN leaves get rates too (unused: BN does not adapt), hence zero grads
    np.testing.assert_allclose(_flat(grads["inner_lr"]), _flat(
        {n: (jax.tree_util.tree_map(jnp.zeros_like, v)
             if n.startswith("norm") else g_lr[n])
         for n, v in params["inner_lr"].items()}), rtol=1e-8, atol=1e-12)
    # both BN rows receive meta-gradient
    assert np.all(np.abs(np.asarray(grads["model"]["norm0"]["scale"])).sum(1)
                  > 0)
    assert float(metrics["msl_loss"]) == pytest.approx(float(ref_loss))


def test_generic_meta_step_follows_state_step_and_trains():
  lrn = MAMLPlusPlus(BNNet(), loss="cross_entropy", inner_steps=2, inner_lr=0.3,
                     msl_epochs=3, first_order_epochs=1, iters_per_epoch=10,
                     eval_inner_steps=3, ways=3)
  # first-order epoch 0, then second order; MSL for 3 epochs, then last step
  assert lrn.phases() == [(True, True), (True, False), (False, True),
                          (False, False)]
  opt = optax.adam(3e-3)
  held = cluster_tasks(jax.random.PRNGKey(0), 16)
  state0 = mj.init_state(lrn, opt, jax.random.PRNGKey(1), task_slice(held, 0))
  step = mj.make_meta_step(lrn, opt)  # the one step every learner uses

  # Reference: the generic mean of per-task gradients, where a traced
  # iteration sets the derivative order by a traced flag inside the inner
  # loop and the weights on the device (not MAML++'s lax.switch of phases).
  @jax.jit
  def host_step(state, tasks, iteration):
    (_, m), g = mj.Learner.meta_grad(lrn, state.params, tasks,
                                     iteration=iteration)
    updates, opt_state = opt.update(g, state.opt_state, state.params)
    return mj.MetaState(optax.apply_updates(state.params, updates), opt_state,
                        state.step + 1), m

  @jax.jit
  def held_out(params):
    loss = task_map.mean_over_tasks(
        lambda t: lrn.task_loss(params, t, iteration=10**6)[0], held)
    return loss, lrn.evaluate(params, task_slice(held, 0))

  before, _ = held_out(state0.params)
  state, ref = state0, state0
  for i in range(45):
    tasks = cluster_tasks(jax.random.PRNGKey(100 + i), 4)
    state, m = step(state, tasks)
    ref, m_ref = host_step(ref, tasks, jnp.asarray(i, jnp.int32))
    if i in (0, 15):  # the multi-step loss is a weighted sum of step losses
      assert float(m["msl_loss"]) != pytest.approx(float(m["loss"]))
    if i == 35:  # after msl_epochs: the last step's loss only
      assert float(m["msl_loss"]) == pytest.approx(float(m["loss"]))
      assert list(lrn.loss_weights_at(i)) == [0.0, 1.0]
    if i in (0, 15, 35):
      assert float(m_ref["msl_loss"]) == pytest.approx(float(m["msl_loss"]),
                                                       rel=1e-4)
  np.testing.assert_allclose(_flat(state.params), _flat(ref.params),
                             rtol=2e-4, atol=2e-5)
  assert int(state.step) == 45
  after, curve = held_out(state.params)
  assert float(after) < 0.85 * float(before)
  assert curve["loss"].shape == (4,)  # beyond K steps: last rates / BN row


def test_outer_optimizer_cosine_per_epoch():
  opt = MAMLPlusPlus.outer_optimizer(meta_lr=1e-3, min_lr=1e-5,
                                     total_epochs=4, iters_per_epoch=2)
  params = {"w": jnp.zeros(())}
  state = opt.init(params)
  lrs = []
  for _ in range(8):
    upd, state = opt.update({"w": jnp.ones(())}, state, params)
    lrs.append(-float(upd["w"]))
  want = [1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + np.cos(np.pi * (i // 2) / 4))
          for i in range(8)]
  # with a constant gradient Adam's step is exactly lr (bias-corrected)
  np.testing.assert_allclose(lrs, want, rtol=1e-4)
  clipped = MAMLPlusPlus.outer_optimizer("miniimagenet_5way_1shot")
  assert isinstance(clipped, optax.GradientTransformation)


@pytest.mark.parametrize("kw, msg", [
    (dict(inner_steps=0), "inner_steps >= 1"),
    (dict(adapt_bn=True), "adapt_bn=False"),
    (dict(first_order_epochs=-1), "first_order_epochs"),
    (dict(iters_per_epoch=0), "iters_per_epoch"),
])
def test_bad_config_raises(kw, msg):
  with pytest.raises(ValueError, match=msg):
    MAMLPlusPlus(models.Conv4(), **kw)


def test_conv4_per_step_bn_layout():
  model = models.Conv4(num_outputs=5, filters=4)
  task = task_slice(cluster_tasks(jax.random.PRNGKey(0), 1), 0)
  task = Task(*(jnp.zeros((a.shape[0], 28, 28, 1)) if a.ndim == 2 else a
                for a in task))
  lrn = MAMLPlusPlus(model, inner_steps=3)
  params = jax.eval_shape(lambda: lrn.init(jax.random.PRNGKey(0), task))
  for i in range(4):
    assert params["model"][f"norm{i}"]["scale"].shape == (3, 4)
    assert params["model"][f"conv{i}"]["kernel"].shape == (3, 3, 1 if i == 0
                                                           else 4, 4)
  assert params["inner_lr"]["head"]["kernel"].shape == (3,)


def test_generic_step_rejects_unknown_task_mapping():
  with pytest.raises(ValueError, match="unknown task mapping"):
    mj.make_meta_step(MAMLPlusPlus(models.MLP()), optax.sgd(0.1), task_map="x")


def test_paper_defaults():
  lrn = registry.make("mamlpp", models.Conv4(), setting="omniglot_5way_1shot")
  assert isinstance(lrn, MAMLPlusPlus)
  assert (lrn.inner_lr, lrn.msl_epochs, lrn.first_order_epochs) == (0.1, 10, 0)
  assert registry.make("mamlpp", models.Conv4()).first_order_epochs == 11
  assert is_norm_path("norm0/scale") and is_norm_path("BatchNorm_0/bias")
  assert not is_norm_path("conv0/kernel") and not is_norm_path("head/bias")
