"""Conditional Neural Process: likelihood vs scipy, architecture vs numpy,
training.

Its figure (:func:`metajax.evaluation.plots.plot_predictions`) is tested in
``tests/evaluation/test_plots.py``.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

import metajax as mj
from metajax import configs
from metajax.algorithms import registry
from metajax.algorithms.cnp import CNP, Normal, gaussian_log_prob
from metajax.data import gp


def one(tasks):
  return jax.tree_util.tree_map(lambda a: a[0], tasks)


def test_log_likelihood_matches_scipy():
  rng = np.random.default_rng(0)
  y, mu = rng.normal(size=(7, 1)), rng.normal(size=(7, 1))
  sd = rng.uniform(0.1, 2.0, size=(7, 1))
  np.testing.assert_allclose(
      gaussian_log_prob(jnp.asarray(y), jnp.asarray(mu), jnp.asarray(sd)),
      stats.norm.logpdf(y, mu, sd), rtol=1e-5)


def _mlp(layers, h, relu_last):
  for i, (k, b) in enumerate(layers):
    h = h @ k + b
    if relu_last or i < len(layers) - 1:
      h = np.maximum(h, 0)
  return h


def test_forward_pass_and_loss_match_numpy():
  learner = CNP(encoder_sizes=(8, 6), decoder_sizes=(7,))
  t = one(gp.sample_tasks(jax.random.PRNGKey(0), 1, num_context=4,
                          num_extra=3))
  params = learner.init(jax.random.PRNGKey(1), t)
  (loss, metrics), pred, ev = jax.jit(lambda p: (
      learner.task_loss(p, t),
      learner.predict(p, learner.adapt(p, t.support_x, t.support_y),
                      t.query_x),
      learner.evaluate(p, t)))(params)
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64),
                             params["model"])
  lay = lambda names: [(p[n]["kernel"], p[n]["bias"]) for n in names]
  cx = np.asarray(t.support_x, np.float64)
  cy = np.asarray(t.support_y, np.float64)
  r = _mlp(lay(["encoder_0", "encoder_1"]), np.concatenate([cx, cy], 1),
           relu_last=False).mean(0)
  tx = np.asarray(t.query_x, np.float64)
  h = _mlp(lay(["decoder_0"]),
           np.concatenate([np.tile(r, (len(tx), 1)), tx], 1), relu_last=True)
  out = h @ p["decoder_out"]["kernel"] + p["decoder_out"]["bias"]
  mu, sd = out[:, :1], 0.1 + 0.9 * np.log1p(np.exp(out[:, 1:]))
  np.testing.assert_allclose(pred.mean, mu, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(pred.stddev, sd, rtol=1e-4, atol=1e-5)
  ty = np.asarray(t.query_y, np.float64)
  np.testing.assert_allclose(loss, -stats.norm.logpdf(ty, mu, sd).mean(),
                             rtol=1e-4)
  np.testing.assert_allclose(metrics["mse"], np.mean((mu - ty) ** 2),
                             rtol=1e-4)
  assert ev["loss"].shape == (1,) and ev["mse"].shape == (1,)


def test_sigma_lower_bound_and_context_permutation_invariance():
  learner = CNP(encoder_sizes=(8, 8), decoder_sizes=(8,))
  t = one(gp.sample_tasks(jax.random.PRNGKey(0), 1, num_context=5,
                          num_extra=4))
  params = learner.init(jax.random.PRNGKey(1), t)
  far = jnp.linspace(-100.0, 100.0, 9)[:, None]
  run = jax.jit(lambda p, cx, cy, x: learner.predict(
      p, learner.adapt(p, cx, cy), x))
  pred = run(params, t.support_x, t.support_y, far)
  assert isinstance(pred, Normal)
  assert np.all(np.asarray(pred.stddev) >= 0.1)
  perm = np.array([3, 0, 4, 1, 2])
  pred2 = run(params, t.support_x[perm], t.support_y[perm], far)
  np.testing.assert_allclose(pred.mean, pred2.mean, rtol=1e-5, atol=1e-6)


def test_meta_training_loss_falls_on_gp_tasks():
  learner = CNP(encoder_sizes=(32, 32), decoder_sizes=(32,))
  opt = optax.adam(3e-3)
  batches = [gp.sample_tasks(jax.random.PRNGKey(i), 16, num_context=6,
                             num_extra=6) for i in range(8)]
  held_out = gp.sample_tasks(jax.random.PRNGKey(99), 16, num_context=6,
                             num_extra=6)
  state = mj.init_state(learner, opt, jax.random.PRNGKey(0), one(held_out))
  step = mj.make_meta_step(learner, opt)
  evaluate = jax.jit(lambda p: jnp.mean(jax.vmap(
      lambda t: learner.task_loss(p, t)[0])(held_out)))
  before = float(evaluate(state.params))
  for i in range(60):
    state, _ = step(state, batches[i % len(batches)])
  after = float(evaluate(state.params))
  assert after < before - 0.2, (before, after)


def test_bad_input_raises():
  with pytest.raises(ValueError, match="min_std"):
    CNP(min_std=1.0)
  with pytest.raises(ValueError, match="encoder_sizes"):
    CNP(encoder_sizes=())
  learner = CNP(encoder_sizes=(4,), decoder_sizes=(4,))
  t = gp.sample_tasks(jax.random.PRNGKey(0), 2, num_context=3, num_extra=2)
  with pytest.raises(ValueError, match="floating point"):
    learner.check(t._replace(support_y=t.support_y.astype(jnp.int32),
                             query_y=t.query_y.astype(jnp.int32)))
  with pytest.raises(ValueError, match=r"\(points, dims\)"):
    learner.init(jax.random.PRNGKey(0), t)  # batched task: one extra axis


def test_paper_settings():
  cnp = registry.make("cnp", None)
  assert isinstance(cnp, CNP)
  assert cnp.encoder_sizes == (128,) * 4 and cnp.decoder_sizes == (128, 128)
  assert CNP().encoder_sizes == cnp.encoder_sizes  # class defaults: the paper
  assert configs.get("cnp", "gp_1d").outer["meta_lr"] == 1e-4
  with pytest.raises(ValueError, match="builds its own"):
    registry.make("cnp", object())
  with pytest.raises(ValueError, match="unknown paper setting"):
    registry.make("cnp", None, setting="celeba")
