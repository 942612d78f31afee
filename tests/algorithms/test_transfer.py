"""Transfer baselines: each head against an independent computation, the
learners through the one meta-step, their boundary checks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metajax as mj
from metajax.algorithms import registry
from metajax.algorithms import transfer_heads as th
from metajax.algorithms.transfer import MetaBaseline, TransferLearner
from metajax.models import MLP
from tests.helpers import class_tasks, one, train_loss_drop


def _features(seed, s=10, d=6, c=5, q=8):
  rng = np.random.default_rng(seed)
  f = rng.normal(size=(s, d)).astype(np.float32)
  y = np.arange(s) % c
  return f, y.astype(np.int32), rng.normal(size=(q, d)).astype(np.float32)


def _unit(x, eps=0.0):
  return x / (np.linalg.norm(x, axis=-1, keepdims=True) + eps)


def test_cosine_logits_match_numpy():
  f, _, _ = _features(0)
  head = th.init_cosine(jax.random.PRNGKey(1), 6, 4)
  v, g = np.asarray(head.direction, np.float64), np.asarray(head.gain)
  g = g * np.array([1.0, 0.5, 2.0, 3.0])  # a learned gain, not the initial
  ref = 2.5 * _unit(f.astype(np.float64), 1e-5) @ (g[:, None] * _unit(v)).T
  got = th.cosine_logits(th.CosineHead(head.direction, jnp.asarray(g)), f, 2.5)
  np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)
  # distLinear's initial class vectors are the rows themselves.
  np.testing.assert_allclose(np.asarray(head.gain), np.linalg.norm(v, axis=1),
                             rtol=1e-6)
  assert th.cosine_scale(200) == 2.0 and th.cosine_scale(4112) == 10.0


def test_simpleshot_matches_numpy():
  f, y, q = _features(1)
  mean = np.random.default_rng(2).normal(size=6).astype(np.float32)
  cl2n = lambda x: _unit(x.astype(np.float64) - mean)  # noqa: E731
  cents = np.stack([cl2n(f)[y == k].mean(0) for k in range(5)])
  dist = np.linalg.norm(cl2n(q)[:, None] - cents[None], axis=-1)
  centroids, counts = th.simpleshot_centroids(f, y, 6, mean)
  logits = np.asarray(th.simpleshot_logits(q, centroids, counts, mean))
  np.testing.assert_allclose(logits[:, :5], -dist ** 2, rtol=1e-5, atol=1e-5)
  assert np.all(np.isneginf(logits[:, 5]))  # class 5: no support example
  np.testing.assert_array_equal(logits.argmax(1), dist.argmin(1))


def test_cosine_centroids_match_numpy():
  f, y, q = _features(3)
  cents = _unit(np.stack([f[y == k].mean(0) for k in range(5)]))
  ref = 7.0 * _unit(q) @ cents.T
  centroids, counts = th.cosine_centroids(f, y, 5)
  got = th.cosine_centroid_logits(q, centroids, counts, 7.0)
  np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("s, d, c", [(5, 8, 5), (25, 16, 5), (40, 6, 20)])
def test_logistic_regression_matches_scikit_learn(s, d, c):
  sklearn = pytest.importorskip("sklearn.linear_model")
  rng = np.random.default_rng(s)
  x = _unit(rng.normal(size=(s, d))).astype(np.float32)
  y = (np.arange(s) % c).astype(np.int32)
  q = _unit(rng.normal(size=(30, d))).astype(np.float32)
  ref = sklearn.LogisticRegression(C=1.0, tol=1e-12, max_iter=100_000).fit(
      x.astype(np.float64), y)
  head = jax.jit(lambda a, b: th.fit_logistic_regression(a, b, c))(x, y)
  probs = jax.nn.softmax(th.linear_logits(head, q))
  np.testing.assert_allclose(np.asarray(probs), ref.predict_proba(q),
                             atol=1e-4)
  np.testing.assert_allclose(np.asarray(head.kernel).T, ref.coef_, atol=5e-4)


def _numpy_sgd_head(f, y, c, kind, rng, epochs, batch, scale):
  """BaselineFinetune's loop in float64 numpy: hand-written gradients and
  PyTorch's SGD(momentum, dampening, weight_decay), with the same
  initialisation and epoch orders as the JAX head."""
  k_init, k_order = jax.random.split(rng)
  if kind == "linear":
    h = th.init_linear(k_init, f.shape[1], c)
    p = [np.asarray(h.kernel, np.float64), np.asarray(h.bias, np.float64)]
  else:
    h = th.init_cosine(k_init, f.shape[1], c)
    p = [np.asarray(h.direction, np.float64), np.asarray(h.gain, np.float64)]
  f = f.astype(np.float64)
  buf, first = None, True
  for e in range(epochs):
    order = np.asarray(jax.random.permutation(jax.random.fold_in(k_order, e),
                                              len(y)))
    for i in range(0, len(y), batch):
      idx = order[i:i + batch]
      x, t = f[idx], np.eye(c)[y[idx]]
      if kind == "linear":
        z = x @ p[0] + p[1]
      else:
        xn = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-5)
        vn = np.linalg.norm(p[0], axis=1)
        z = scale * xn @ (p[1][:, None] * p[0] / vn[:, None]).T
      prob = np.exp(z - z.max(1, keepdims=True))
      prob /= prob.sum(1, keepdims=True)
      dz = (prob - t) / len(idx)
      if kind == "linear":
        grads = [x.T @ dz, dz.sum(0)]
      else:
        v, g = p
        vn = np.linalg.norm(v, axis=1)
        dw = scale * dz.T @ xn                        # d/d(class vectors)
        dg = np.sum(dw * v / vn[:, None], axis=1)
        u = v / vn[:, None]
        dv = (g / vn)[:, None] * (dw - np.sum(dw * u, 1, keepdims=True) * u)
        grads = [dv, dg]
      gs = [gr + 1e-3 * w for gr, w in zip(grads, p)]
      buf = gs if first else [0.9 * b + 0.1 * g_ for b, g_ in zip(buf, gs)]
      first = False
      p = [w - 0.01 * b for w, b in zip(p, buf)]
  return p


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_sgd_head_is_the_official_loop(kind):
  f, y, q = _features(4, s=7, d=5, c=3)
  rng = jax.random.PRNGKey(5)
  got = th.fit_sgd_head(f, y, 3, kind=kind, rng=rng, epochs=6, batch_size=3,
                        scale=2.0)
  want = _numpy_sgd_head(f, y, 3, kind, rng, 6, 3, 2.0)
  for a, b in zip(got, want):
    np.testing.assert_allclose(np.asarray(a), b, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="unknown head kind"):
    th.fit_sgd_head(f, y, 3, kind="mlp", rng=rng)


def test_sgd_head_learns_separable_support():
  f, y, _ = _features(6, s=10, d=16, c=5)
  for kind in ("linear", "cosine"):
    head = th.fit_sgd_head(f * 10, y, 5, kind=kind, rng=jax.random.PRNGKey(0))
    logits = (th.linear_logits(head, f * 10) if kind == "linear"
              else th.cosine_logits(head, f * 10, 2.0))
    np.testing.assert_array_equal(np.asarray(logits).argmax(1), y)


# -- learners ------------------------------------------------------------------
def _pretrain_tasks(seed, classes=6, batch=8, dim=10):
  """Minibatches of a fixed 6-class problem with global labels."""
  rng = np.random.default_rng(seed)
  protos = rng.normal(size=(classes, dim))
  y = rng.integers(0, classes, size=(2, batch)).astype(np.int32)
  x = (protos[y] + 0.3 * rng.normal(size=y.shape + (dim,))).astype(np.float32)
  h = batch // 2
  return mj.Task(x[:, :h], y[:, :h], x[:, h:], y[:, h:])


@pytest.mark.parametrize("classifier", ["linear", "cosine"])
def test_pretraining_loss_falls(classifier):
  learner = TransferLearner(MLP((16,), 8), base_classes=6,
                            classifier=classifier)
  before, after = train_loss_drop(learner, _pretrain_tasks(0), steps=40,
                                  lr=3e-2)
  assert after < 0.5 * before


def test_meta_baseline_loss_falls_and_starts_from_pretrained():
  tasks = class_tasks(0, num_tasks=4, ways=3, shots=2, query=3)
  learner = MetaBaseline(MLP((16,), 8), ways=3)
  before, after = train_loss_drop(learner, tasks, steps=30)
  assert after < before
  pre = TransferLearner(MLP((16,), 8), base_classes=6)
  p = pre.init(jax.random.PRNGKey(0), one(_pretrain_tasks(0)))
  params = learner.from_pretrained(p)
  assert params["model"] is p["model"] and float(params["temperature"]) == 10.0
  assert "temperature" not in MetaBaseline(
      MLP((4,), 3), learn_temperature=False).from_pretrained(p)


@pytest.mark.parametrize("name", ["baseline", "baseline_pp", "rfs_simple",
                                  "simpleshot"])
def test_heads_evaluate_vmapped_and_score_easy_tasks(name):
  tasks = class_tasks(1, num_tasks=3, ways=3, shots=2, query=4, noise=0.1)
  # a linear feature map of well-separated classes
  learner = registry.make(name, MLP((), 10), ways=3, base_classes=6)
  params = learner.init(jax.random.PRNGKey(0), one(tasks))
  if name == "simpleshot":
    with pytest.raises(ValueError, match="with_feature_mean"):
      learner.evaluate(params, one(tasks))
    base = np.random.default_rng(9).normal(size=(50, 10)).astype(np.float32)
    learner = learner.with_feature_mean(learner.feature_mean_of(params, base))
  metrics = jax.jit(jax.vmap(lambda t: learner.evaluate(params, t)))(tasks)
  assert metrics["accuracy"].shape == (3, 1)
  assert float(jnp.mean(metrics["accuracy"])) >= 0.9


def test_feature_mean_is_the_mean_feature():
  learner = TransferLearner(MLP((5,), 4), base_classes=3, head="simpleshot")
  x = np.random.default_rng(0).normal(size=(23, 6)).astype(np.float32)
  params = learner.init(jax.random.PRNGKey(0), one(_pretrain_tasks(0, dim=6)))
  want = np.asarray(learner.apply(params["model"], x), np.float64).mean(0)
  got = learner.feature_mean_of(params, x, batch_size=5)  # 5 batches, 1 short
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="at least one example"):
    learner.feature_mean_of(params, x[:0])


def test_checks_name_the_problem():
  with pytest.raises(ValueError, match="base_classes"):
    TransferLearner(MLP((4,), None))
  with pytest.raises(ValueError, match="unknown head"):
    TransferLearner(MLP((4,), None), base_classes=4, head="svm")
  with pytest.raises(ValueError, match="unknown classifier"):
    TransferLearner(MLP((4,), None), base_classes=4, classifier="mlp")
  learner = TransferLearner(MLP((4,), None), base_classes=6, ways=3)
  tasks = _pretrain_tasks(0)
  learner.check(tasks)  # global labels up to base_classes
  query_y = np.array(tasks.query_y)
  query_y[0, 0] = 6
  with pytest.raises(ValueError, match="label"):
    learner.check(tasks._replace(query_y=query_y))
