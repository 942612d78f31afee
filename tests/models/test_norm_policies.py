"""The three batch-norm policies (transductive, running statistics, cbfinn/maml's)
as layers, in conv-4, and through the one meta-step and the harness."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax as mj
from metajax.core import masks
from metajax.models import Conv4, layers
from tests.helpers import first, image_tasks


def _x(seed=0, shape=(6, 4, 4, 3)):
  return jax.random.normal(jax.random.PRNGKey(seed), shape) * 3 + 2


def test_running_policy_trains_on_batch_statistics_and_reports_them():
  x = _x()
  bn = layers.BatchNorm("running")
  params = {"params": bn.init(jax.random.PRNGKey(1), x)["params"]}
  y, upd = bn.apply(params, x, mutable=[layers.BATCH_STATS])
  # Training output: the batch's own statistics, as the transductive policy.
  ref = layers.BatchNorm("transductive").apply(params, x)
  np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
  stats = upd[layers.BATCH_STATS]
  flat = np.asarray(x).reshape(-1, 3)
  np.testing.assert_allclose(stats["mean"], flat.mean(0), rtol=1e-5)
  # PyTorch's running variance averages the unbiased batch variance.
  np.testing.assert_allclose(stats["var"], flat.var(0, ddof=1), rtol=1e-5)


def test_running_policy_evaluates_each_example_alone_and_deterministically():
  x = _x()
  bn = layers.BatchNorm("running")
  p = bn.init(jax.random.PRNGKey(1), x)["params"]
  p = {"scale": p["scale"] * 1.5, "bias": p["bias"] + 0.25}
  stats = {"mean": jnp.array([1.0, 2.0, -1.0]), "var": jnp.array([4.0, 1.0, 9.0])}
  variables = {"params": p, layers.BATCH_STATS: stats}
  y = bn.apply(variables, x)
  expect = (x - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5) * 1.5 + 0.25
  np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-5)
  # Per example: one example alone gives its row of the batch's output.
  np.testing.assert_allclose(bn.apply(variables, x[2:3]), y[2:3], rtol=1e-6)
  # Train and eval differ on the same batch.
  assert not np.allclose(bn.apply({"params": p}, x), y, atol=1e-3)


def test_maml_policy_is_offset_only_with_tf_epsilon():
  x = _x()
  bn = layers.BatchNorm("maml")
  p = bn.init(jax.random.PRNGKey(1), x)["params"]
  assert set(p) == {"bias"}
  p = {"bias": jnp.array([0.5, -0.5, 1.0])}
  flat = np.asarray(x, np.float64).reshape(-1, 3)
  expect = ((flat - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-3)
            + np.array([0.5, -0.5, 1.0])).reshape(x.shape)
  np.testing.assert_allclose(bn.apply({"params": p}, x), expect, rtol=1e-5,
                             atol=1e-5)


@pytest.mark.parametrize("norm", ["running", "maml"])
def test_fused_max_pool_block_matches_unfused_order(norm):
  """NormReluMaxPool under the new policies against BatchNorm -> ReLU -> pool
  with the conv bias added first, in training and (running) evaluation."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.standard_normal((3, 4, 6, 4)) * 2 + 0.5)
    cb = jnp.asarray(rng.standard_normal(4))
    fused = layers.NormReluMaxPool(norm)
    plain = layers.BatchNorm(norm)
    p = fused.init(jax.random.PRNGKey(0), y, cb)["params"]
    p = jax.tree_util.tree_map(
        lambda a: a + jnp.asarray(rng.standard_normal(a.shape)), p)
    pool = lambda z: jax.lax.reduce_window(z, -jnp.inf, jax.lax.max,
                                           (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    ref = pool(jax.nn.relu(plain.apply({"params": p}, y + cb)))
    np.testing.assert_allclose(fused.apply({"params": p}, y, cb), ref,
                               rtol=1e-12, atol=1e-12)
    if norm == "running":
      _, upd = fused.apply({"params": p}, y, cb, mutable=[layers.BATCH_STATS])
      _, upd_ref = plain.apply({"params": p}, y + cb,
                               mutable=[layers.BATCH_STATS])
      for k in ("mean", "var"):
        np.testing.assert_allclose(upd[layers.BATCH_STATS][k],
                                   upd_ref[layers.BATCH_STATS][k], rtol=1e-12)
      v = {"params": p, layers.BATCH_STATS: upd_ref[layers.BATCH_STATS]}
      np.testing.assert_allclose(
          fused.apply(v, y, cb), pool(jax.nn.relu(plain.apply(v, y + cb))),
          rtol=1e-12, atol=1e-12)


def test_unknown_policy_is_named():
  with pytest.raises(ValueError, match="unknown norm policy 'layer'"):
    Conv4(3, filters=4, blocks=2, norm="layer").init(
        jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 1)))


def test_exclude_norm_mask_keeps_batch_norm_out_of_the_inner_loop():
  tasks = image_tasks(jax.random.PRNGKey(0), num_tasks=2, size=8,
                      dtype=jnp.float32)
  learner = mj.MAML(Conv4(3, filters=4, blocks=2, norm="maml",
                          downsample="stride", features="pool",
                          head_init="normal"),
                    loss="cross_entropy", inner_steps=2, inner_lr=0.4,
                    adapt_mask=masks.exclude_norm)
  params = learner.init(jax.random.PRNGKey(1), first(tasks))
  t = first(tasks)
  adapted = learner.adapt(params, t.support_x, t.support_y)
  for name in ("norm0", "norm1"):
    np.testing.assert_array_equal(adapted[name]["bias"],
                                  params["model"][name]["bias"])
  assert not np.allclose(adapted["conv0"]["kernel"],
                         params["model"]["conv0"]["kernel"])
  # ... but they are meta-learned: the meta-gradient reaches them.
  (_, _), grads = learner.task_grad(params, t)
  assert float(jnp.abs(grads["model"]["norm0"]["bias"]).sum()) > 0
  # The N(0, 1) head of cbfinn/maml.
  assert float(jnp.std(params["model"]["head"]["kernel"])) > 0.5


@pytest.mark.parametrize("make", [
    lambda m: mj.ProtoNet(m),
    lambda m: mj.ProtoNet(m, embedding="separate"),
])
def test_running_statistics_through_the_meta_step_and_harness(make):
  tasks = image_tasks(jax.random.PRNGKey(0), num_tasks=2, size=8,
                      dtype=jnp.float32)
  learner = make(Conv4(None, filters=4, blocks=2, norm="running"))
  opt = optax.adam(1e-3)
  state = mj.init_state(learner, opt, jax.random.PRNGKey(1), first(tasks))
  stats0 = state.model_state
  assert set(stats0) == {"norm0", "norm1"}
  np.testing.assert_array_equal(stats0["norm0"]["mean"], 0)
  np.testing.assert_array_equal(stats0["norm0"]["var"], 1)
  step = mj.make_meta_step(learner, opt)
  new, metrics = step(state, tasks)
  assert "batch_stats" not in metrics
  # One EMA step with momentum 0.1 of the meta-batch's mean batch statistics.
  (_, m), _ = learner.meta_grad(state.params, tasks)
  expect = jax.tree_util.tree_map(lambda r, b: 0.9 * r + 0.1 * b, stats0,
                                  m["batch_stats"])
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      new.model_state, expect)
  # Evaluation with running statistics: per example (a task's query
  # predictions do not change when the other queries change).
  ev = learner.with_model_state(new.model_state)
  t = first(tasks)
  st = ev.adapt(new.params, t.support_x, t.support_y)
  full = ev.predict(new.params, st, t.query_x)
  part = ev.predict(new.params, st, t.query_x[:2])
  np.testing.assert_allclose(part, full[:2], rtol=1e-5, atol=1e-5)
  train_mode = learner.predict(new.params, learner.adapt(
      new.params, t.support_x, t.support_y), t.query_x)
  assert not np.allclose(train_mode, full, atol=1e-4)
  r1 = mj.evaluate(learner, new.params, tasks, model_state=new.model_state)
  r2 = mj.evaluate(ev, new.params, tasks)
  assert r1.mean == r2.mean


def test_running_statistics_for_maml_and_reptile():
  tasks = image_tasks(jax.random.PRNGKey(0), num_tasks=2, size=8,
                      dtype=jnp.float32)
  model = Conv4(3, filters=4, blocks=2, norm="running")
  for learner in (mj.MAML(model, loss="cross_entropy", inner_steps=1,
                          inner_lr=0.1),
                  mj.Reptile(model, loss="cross_entropy", inner_steps=2,
                             inner_batch_size=None)):
    opt = optax.sgd(0.1)
    state = mj.init_state(learner, opt, jax.random.PRNGKey(1), first(tasks))
    new, _ = mj.make_meta_step(learner, opt)(state, tasks)
    moved = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)),
                                   new.model_state, state.model_state)
    assert all(jax.tree_util.tree_leaves(moved))
    res = mj.evaluate(learner, new.params, tasks, model_state=new.model_state,
                      steps=1)
    assert np.isfinite(res.mean)


def test_maml_plus_plus_refuses_running_statistics():
  with pytest.raises(ValueError, match="norm='running'"):
    mj.MAMLPlusPlus(Conv4(3, filters=4, blocks=2, norm="running"),
                    loss="cross_entropy")


def test_checkpoint_keeps_running_statistics(tmp_path):
  tasks = image_tasks(jax.random.PRNGKey(0), num_tasks=2, size=8,
                      dtype=jnp.float32)
  learner = mj.ProtoNet(Conv4(None, filters=4, blocks=2, norm="running"))
  sample = lambda rng: tasks
  state, _ = mj.fit(learner, optax.adam(1e-3), sample, num_steps=2,
                    checkpoint_dir=tmp_path, checkpoint_every=2,
                    progress=False, steps_per_call=1)
  resumed, _ = mj.fit(learner, optax.adam(1e-3), sample, num_steps=2,
                      checkpoint_dir=tmp_path, checkpoint_every=2,
                      progress=False, steps_per_call=1)
  jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.model_state,
                         state.model_state)
  assert not np.allclose(state.model_state["norm0"]["var"], 1)


def test_support_context_scores_each_query_with_the_support_set():
  """Reptile's non-transductive evaluation: every query in its own batch
  with the support set, whose batch-norm statistics it shares."""
  tasks = image_tasks(jax.random.PRNGKey(0), num_tasks=1, size=8,
                      dtype=jnp.float32)
  t = first(tasks)
  model = Conv4(3, filters=4, blocks=2)
  base = mj.Reptile(model, loss="cross_entropy", inner_steps=1,
                    inner_batch_size=None)
  learner = mj.Reptile(model, loss="cross_entropy", inner_steps=1,
                       inner_batch_size=None, eval_query_context="support")
  params = learner.init(jax.random.PRNGKey(1), t)
  theta = params["model"]
  expect = jnp.stack([
      model.apply({"params": theta},
                  jnp.concatenate([t.support_x, q[None]], 0))[-1]
      for q in t.query_x])
  np.testing.assert_allclose(learner.eval_outputs(theta, t), expect,
                             rtol=1e-5, atol=1e-5)
  # Not the transductive outputs, and the query's score does not depend on
  # the other queries.
  assert not np.allclose(base.eval_outputs(theta, t), expect, atol=1e-4)
  t2 = t._replace(query_x=t.query_x.at[1:].add(3.0))
  np.testing.assert_allclose(learner.eval_outputs(theta, t2)[0], expect[0],
                             rtol=1e-5, atol=1e-5)
  curve = learner.evaluate(params, t, steps=2)["accuracy"]
  assert curve.shape == (3,)
  with pytest.raises(ValueError, match="eval_query_context"):
    mj.MAML(model, loss="cross_entropy", eval_query_context="single")
