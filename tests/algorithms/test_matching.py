"""Matching Networks: attention, class log-probabilities, FCE against numpy, training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.algorithms.matching import (FullContextEmbedding, MatchingNet, attention,
                              class_log_probs, cosine_similarity)
from metajax.algorithms import registry
from metajax.models import MLP
from tests.helpers import class_tasks, one, train_loss_drop


def test_attention_rows_sum_to_one_and_match_numpy():
  rng = np.random.default_rng(0)
  q, s = rng.normal(size=(5, 6)), rng.normal(size=(7, 6))
  a = np.asarray(attention(jnp.asarray(q), jnp.asarray(s), temperature=0.5))
  np.testing.assert_allclose(a.sum(1), 1.0, rtol=1e-6)
  cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
      s / np.linalg.norm(s, axis=1, keepdims=True)).T
  np.testing.assert_allclose(cosine_similarity(q, s), cos, rtol=1e-5,
                             atol=1e-6)
  e = np.exp(cos / 0.5)
  np.testing.assert_allclose(a, e / e.sum(1, keepdims=True), rtol=1e-5)


def test_class_log_probs_are_log_of_summed_attention():
  rng = np.random.default_rng(1)
  scores = rng.normal(size=(4, 6))
  labels = np.array([0, 2, 2, 0, 1, 2])
  lp = np.asarray(jax.jit(class_log_probs, static_argnums=2)(
      jnp.asarray(scores), jnp.asarray(labels), 4))
  a = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)
  ref = np.stack([a[:, labels == k].sum(1) for k in range(3)], 1)
  np.testing.assert_allclose(np.exp(lp[:, :3]), ref, rtol=1e-5)
  np.testing.assert_allclose(np.exp(lp[:, :3]).sum(1), 1.0, rtol=1e-5)
  assert np.all(np.isneginf(lp[:, 3]))  # class 3 has no support example
  g = jax.jit(jax.grad(lambda s: jnp.sum(
      class_log_probs(s, labels, 4)[:, :3])))(jnp.asarray(scores))
  assert np.isfinite(np.asarray(g)).all()


def _lstm(p, c, h, x):
  z = np.concatenate([x, h]) @ p["gates"]["kernel"] + p["gates"]["bias"]
  i, f, o, u = np.split(z, 4)
  sig = lambda v: 1 / (1 + np.exp(-v))
  c = sig(f) * c + sig(i) * np.tanh(u)
  return c, sig(o) * np.tanh(c)


def test_full_context_embeddings_match_numpy():
  d, steps = 5, 3
  rng = np.random.default_rng(2)
  gp = rng.normal(size=(4, d)).astype(np.float32)
  fp = rng.normal(size=(3, d)).astype(np.float32)
  fce = FullContextEmbedding(d, steps)
  params = jax.tree_util.tree_map(
      np.asarray, fce.init(jax.random.PRNGKey(0), gp, fp)["params"])
  g, f = jax.jit(fce.apply)({"params": params}, gp, fp)
  # Support: bidirectional LSTM states plus the skip connection.
  hf, hb = [], [None] * 4
  c, h = np.zeros(d), np.zeros(d)
  for i in range(4):
    c, h = _lstm(params["support_fwd"], c, h, gp[i])
    hf.append(h)
  c, h = np.zeros(d), np.zeros(d)
  for i in reversed(range(4)):
    c, h = _lstm(params["support_bwd"], c, h, gp[i])
    hb[i] = h
  g_ref = np.stack(hf) + np.stack(hb) + gp
  np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6)
  # Query: K attention-LSTM steps with read-out r over g.
  for q in range(3):
    h, c = fp[q], np.zeros(d)
    att = lambda h: np.exp(g_ref @ h) / np.exp(g_ref @ h).sum()
    r = att(h) @ g_ref
    for _ in range(steps):
      c, h_hat = _lstm(params["query_att"], c, np.concatenate([h, r]), fp[q])
      h = h_hat + fp[q]
      r = att(h) @ g_ref
    np.testing.assert_allclose(f[q], h, rtol=1e-4, atol=1e-5)


def test_learner_logits_without_fce_match_numpy():
  t = one(class_tasks(0, num_tasks=1, ways=3, shots=2, query=2))
  learner = MatchingNet(MLP((8,), 6, activation=jnp.tanh), ways=3,
                        embedding="separate")
  params = learner.init(jax.random.PRNGKey(0), t)
  logits, fs, fq = jax.jit(lambda p: (
      learner.logits(p, *t[:3]), learner.apply(p["model"], t.support_x),
      learner.apply(p["model"], t.query_x)))(params)
  fs, fq = np.asarray(fs, np.float64), np.asarray(fq, np.float64)
  cos = (fq / np.linalg.norm(fq, axis=1, keepdims=True)) @ (
      fs / np.linalg.norm(fs, axis=1, keepdims=True)).T
  a = np.exp(cos) / np.exp(cos).sum(1, keepdims=True)
  sy = np.asarray(t.support_y)
  ref = np.log(np.stack([a[:, sy == k].sum(1) for k in range(3)], 1))
  np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-5)


def test_bad_options_raise():
  with pytest.raises(ValueError, match="fce_steps"):
    MatchingNet(MLP((4,), 3), fce_steps=0)
  with pytest.raises(ValueError, match="temperature"):
    MatchingNet(MLP((4,), 3), temperature=0.0)


@pytest.mark.parametrize("fce", [False, True])
def test_meta_training_loss_falls(fce):
  tasks = class_tasks(4, num_tasks=3, ways=3, shots=2, query=3)
  learner = MatchingNet(MLP((16,), 8), fce=fce, fce_steps=1, ways=3)
  first, last = train_loss_drop(learner, tasks, steps=30, lr=2e-2)
  assert last < 0.8 * first, (first, last)


def test_paper_settings():
  omniglot = registry.make("matchingnet", MLP((4,), 3))
  assert isinstance(omniglot, MatchingNet) and not omniglot.fce
  assert registry.make("matchingnet", MLP((4,), 3),
                       setting="miniimagenet_5way_1shot").fce
  with pytest.raises(ValueError, match="unknown paper setting"):
    registry.make("matchingnet", MLP((4,), 3), setting="cub")
