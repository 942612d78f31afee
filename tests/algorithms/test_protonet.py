"""Prototypical Networks: logits against numpy, ways/shots, embedding policy, training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metajax as mj
from metajax import configs
from metajax.algorithms import registry
from metajax.models import MLP, Conv4
from metajax.algorithms.embedding import EmbeddingLearner, smoothed_cross_entropy
from metajax.algorithms.protonet import ProtoNet
from tests.helpers import class_tasks, one, train_loss_drop


def test_logits_match_numpy():
  tasks = class_tasks(0, num_tasks=1, ways=4, shots=3, query=5)
  t = one(tasks)
  learner = ProtoNet(MLP((7,), 5), embedding="separate")
  params = learner.init(jax.random.PRNGKey(1), t)
  logits = np.asarray(jax.jit(learner.logits)(params, t.support_x,
                                              t.support_y, t.query_x))
  fs = np.asarray(learner.apply(params["model"], t.support_x), np.float64)
  fq = np.asarray(learner.apply(params["model"], t.query_x), np.float64)
  sy = np.asarray(t.support_y)
  protos = np.stack([fs[sy == k].mean(0) for k in range(4)])
  ref = -np.array([[np.sum((q - c) ** 2) for c in protos] for q in fq])
  # ways=None: the logits are S wide; classes 4.. have no support: -inf.
  assert logits.shape == (5 * 4, 12)
  np.testing.assert_allclose(logits[:, :4], ref, rtol=1e-4, atol=1e-4)
  assert np.all(np.isneginf(logits[:, 4:]))
  loss, metrics = jax.jit(learner.task_loss)(params, t)
  ref_lp = ref - np.log(np.sum(np.exp(ref - ref.max(1, keepdims=True)), 1,
                               keepdims=True)) - ref.max(1, keepdims=True)
  qy = np.asarray(t.query_y)
  np.testing.assert_allclose(
      float(loss), -ref_lp[np.arange(len(qy)), qy].mean(), rtol=1e-4)
  np.testing.assert_allclose(float(metrics["accuracy"]),
                             np.mean(ref.argmax(1) == qy))


def test_train_and_test_ways_and_shots_differ():
  """A learner built for 5 ways scores a 2-way 1-shot task like a 2-way one."""
  big = ProtoNet(MLP((7,), 5), ways=5, embedding="separate")
  train = class_tasks(0, num_tasks=1, ways=5, shots=3, query=2)
  params = big.init(jax.random.PRNGKey(0), one(train))
  test = one(class_tasks(1, num_tasks=1, ways=2, shots=1, query=4))
  logits = np.asarray(jax.jit(big.logits)(params, test.support_x,
                                          test.support_y, test.query_x))
  assert logits.shape == (8, 5)
  assert np.all(np.isneginf(logits[:, 2:]))
  small = ProtoNet(MLP((7,), 5), ways=2, embedding="separate")
  np.testing.assert_allclose(
      logits[:, :2],
      jax.jit(small.logits)(params, test.support_x, test.support_y,
                            test.query_x),
      rtol=1e-5, atol=1e-6)
  m = jax.jit(big.evaluate)(params, test)
  assert m["loss"].shape == (1,) and np.isfinite(m["loss"]).all()
  # Gradients stay finite with absent classes (no 0/0 behind the mask).
  g = jax.jit(jax.grad(lambda p: big.task_loss(p, test)[0]))(params)
  assert all(np.isfinite(np.asarray(a)).all()
             for a in jax.tree_util.tree_leaves(g))


def test_unbalanced_shots():
  learner = ProtoNet(MLP((7,), 5), ways=3, embedding="separate")
  t = one(class_tasks(0, num_tasks=1, ways=3, shots=2, query=2))
  sy = np.array([0, 0, 0, 1, 2, 2], np.int32)  # 3 / 1 / 2 shots
  params = learner.init(jax.random.PRNGKey(0), t)
  state = learner.adapt(params, t.support_x, sy)
  protos, counts = state.head
  fs = np.asarray(learner.apply(params["model"], t.support_x))
  np.testing.assert_allclose(counts, [3, 1, 2])
  np.testing.assert_allclose(protos[0], fs[:3].mean(0), rtol=1e-5)
  np.testing.assert_allclose(protos[1], fs[3], rtol=1e-5)


def test_joint_and_separate_embedding():
  tasks = class_tasks(0, num_tasks=1, ways=2, shots=2, query=3,
                      image=(8, 8, 1))
  t = one(tasks)
  # Without batch norm the two policies are the same function.
  plain = Conv4(num_outputs=None, filters=3, blocks=2, norm="none")
  a = ProtoNet(plain, embedding="joint", ways=2)
  b = ProtoNet(plain, embedding="separate", ways=2)
  p = a.init(jax.random.PRNGKey(0), t)
  la, lb = jax.jit(lambda p: (a.logits(p, *t[:3]), b.logits(p, *t[:3])))(p)
  np.testing.assert_allclose(la, lb, rtol=1e-5, atol=1e-5)
  # With transductive batch norm, joint embedding shares statistics.
  bn = Conv4(num_outputs=None, filters=3, blocks=2)
  joint = ProtoNet(bn, embedding="joint", ways=2)
  sep = ProtoNet(bn, embedding="separate", ways=2)
  p = joint.init(jax.random.PRNGKey(0), t)

  @jax.jit
  def run(p):
    f = joint.apply(p["model"], jnp.concatenate([t.support_x, t.query_x]))
    js = joint.adapt(p, t.support_x, t.support_y)
    ss = sep.adapt(p, t.support_x, t.support_y)
    return (joint.logits(p, *t[:3]), sep.logits(p, *t[:3]), f, js,
            joint.predict(p, js, t.query_x), sep.predict(p, ss, t.query_x))

  lj, ls, f, jstate, pj, ps = jax.tree_util.tree_map(np.asarray, run(p))
  assert np.max(np.abs(lj - ls)) > 1e-3
  # Joint: one call embeds support and query together.
  protos = np.stack([f[:4][np.asarray(t.support_y) == k].mean(0)
                     for k in range(2)])
  ref = -((f[4:, None] - protos[None]) ** 2).sum(-1)
  np.testing.assert_allclose(lj, ref, rtol=1e-4, atol=1e-4)
  # Joint: adapt keeps the support set and predict re-embeds it with the
  # query batch; separate: the head is fitted once in adapt and reused.
  assert jstate.head is None
  np.testing.assert_allclose(pj, lj, rtol=1e-6)
  np.testing.assert_allclose(ps, ls, rtol=1e-5, atol=1e-5)


def test_bad_input_raises():
  with pytest.raises(ValueError, match="embedding policy"):
    ProtoNet(MLP((4,), 3), embedding="both")
  with pytest.raises(ValueError, match="ways"):
    ProtoNet(MLP((4,), 3), ways=0)
  learner = ProtoNet(MLP((4,), 3), ways=3)
  tasks = class_tasks(0, num_tasks=2, ways=3)
  bad = tasks._replace(support_y=np.where(tasks.support_y == 2, 1,
                                          tasks.support_y).astype(np.int32))
  with pytest.raises(ValueError, match="no support example"):
    learner.check(bad)
  with pytest.raises(ValueError, match="outside"):
    ProtoNet(MLP((4,), 3), ways=2).check(tasks)
  with pytest.raises(ValueError, match="integers"):
    learner.check(tasks._replace(support_y=tasks.support_y.astype(np.float32),
                                 query_y=tasks.query_y.astype(np.float32)))
  x3 = np.zeros((2, 5, 3), np.float32)  # a backbone output that is not (N, D)
  mlp = MLP((4,), 3)
  with pytest.raises(ValueError, match="features"):
    ProtoNet(mlp).apply(mlp.init(jax.random.PRNGKey(0), x3)["params"], x3)


def test_label_smoothing_matches_formula():
  logits = jnp.array([[2.0, 0.5, -jnp.inf, 1.0], [0.0, 1.0, -jnp.inf, 3.0]])
  labels = jnp.array([0, 3])
  eps = 0.1
  lp = np.asarray(jax.nn.log_softmax(logits))
  ref = []
  for i, y in enumerate([0, 3]):
    t = np.array([eps / 2] * 4)
    t[2] = 0.0
    t[y] = 1 - eps
    ref.append(-np.sum(t[[0, 1, 3]] * lp[i, [0, 1, 3]]))
  np.testing.assert_allclose(smoothed_cross_entropy(logits, labels, eps),
                             np.mean(ref), rtol=1e-6)
  np.testing.assert_allclose(smoothed_cross_entropy(logits, labels, 0.0),
                             -np.mean(lp[[0, 1], [0, 3]]), rtol=1e-6)


def test_meta_training_loss_falls_conv4():
  tasks = class_tasks(3, num_tasks=2, ways=3, shots=2, query=2,
                      image=(16, 16, 1), noise=1.0)
  learner = ProtoNet(Conv4(num_outputs=None, filters=4))
  first, last = train_loss_drop(learner, tasks, steps=25, lr=3e-2)
  assert last < 0.7 * first, (first, last)


def test_is_an_embedding_learner():
  assert issubclass(ProtoNet, EmbeddingLearner)
  assert issubclass(ProtoNet, mj.Learner)


def test_paper_settings():
  mlp = MLP((4,), 3)
  make = registry.make
  assert make("protonet", mlp).ways == 60  # Omniglot: 60-way training
  assert make("protonet", mlp, setting="miniimagenet_5way_1shot").ways == 30
  assert make("protonet", mlp, setting="miniimagenet_5way_5shot",
              ways=7).ways == 7
  assert make("protonet", None).model == Conv4(num_outputs=None)
  outer = configs.get("protonet", "omniglot_20way_5shot").outer
  assert (outer["meta_lr"], outer["train_ways"]) == (1e-3, 60)
  with pytest.raises(ValueError, match="unknown paper setting"):
    make("protonet", mlp, setting="cifar")
