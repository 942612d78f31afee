"""Conditional Neural Process: likelihood vs scipy, architecture vs numpy,
padded tasks vs unpadded ones, one compilation per run, training.

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


def _f64(tree):
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


@pytest.mark.parametrize("testing", [False, True])
def test_padded_task_gives_the_unpadded_numbers(testing):
  """Loss, metrics, predictions and gradients of a padded task (the fixed-
  shape batches of metajax.data.gp) equal those of the same task without its
  padding, in float64."""
  learner = CNP(encoder_sizes=(16, 16), decoder_sizes=(16,))
  with jax.enable_x64(True):
    # Training batches share their counts: join two batches of two.
    tasks = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *(
        gp.sample_tasks(jax.random.PRNGKey(s), 2, testing=testing,
                        num_grid=40, dtype=jnp.float64) for s in (0, 2)))
    params = _f64(jax.jit(learner.init)(jax.random.PRNGKey(0), one(tasks)))

    def numbers(p, t):
      (loss, m), g = learner.task_grad(p, t)
      pred = learner.predict(p, learner.adapt(p, t.support_x, t.support_y),
                             t.query_x)
      return loss, m, g, pred, learner.evaluate(p, t)

    run = jax.jit(numbers)
    padded = jax.vmap(run, (None, 0))(params, tasks)
    seen, losses = set(), []
    for i in range(4):
      t = jax.tree_util.tree_map(lambda a: a[i], tasks)
      u = gp.unpad(t)
      nc, nt = len(u.support_x), len(u.query_x)
      seen.add((nc, nt))
      ref = run(params, u)
      losses.append(ref[0])
      got = jax.tree_util.tree_map(lambda a: a[i], padded)
      for k in (0, 1, 2, 4):  # loss, metrics, gradients, evaluate
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12,
                                                    atol=1e-12),
            got[k], ref[k])
      assert got[2]["model"]["encoder_0"]["kernel"].dtype == jnp.float64
      # Predictions at the real targets; NaN at padding inputs.
      for a, b in zip(got[3], ref[3]):
        np.testing.assert_allclose(a[:nt], b, rtol=1e-12, atol=1e-12)
        assert np.all(np.isnan(np.asarray(a[nt:])))
      assert np.isfinite(float(got[0]))
    assert len(seen) > 1  # the tasks' sizes differ
    # The batch loss (mean over tasks) is the mean of the unpadded losses.
    (loss, _), grads = jax.jit(learner.meta_grad)(params, tasks)
    np.testing.assert_allclose(loss, np.mean(losses), rtol=1e-12)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def test_padding_is_ignored_whatever_its_position():
  learner = CNP(encoder_sizes=(8,), decoder_sizes=(8,))
  t = one(gp.sample_tasks(jax.random.PRNGKey(0), 1, num_context=5,
                          num_extra=3))
  params = learner.init(jax.random.PRNGKey(1), t)
  nan = jnp.full((2, 1), jnp.nan)
  holes = mj.Task(jnp.concatenate([t.support_x[:2], nan, t.support_x[2:]]),
                  jnp.concatenate([t.support_y[:2], nan, t.support_y[2:]]),
                  jnp.concatenate([nan, t.query_x]),
                  jnp.concatenate([nan, t.query_y]))
  np.testing.assert_allclose(learner.task_loss(params, holes)[0],
                             learner.task_loss(params, t)[0], rtol=1e-6)
  # A NaN target at a real input is bad data, not padding: the loss says so.
  bad = t._replace(query_y=t.query_y.at[0, 0].set(jnp.nan))
  assert np.isnan(float(learner.task_loss(params, bad)[0]))


class CountingCNP(CNP):
  """A CNP that counts how often its loss is traced (a Python side effect:
  it runs once per trace, never in a compiled call)."""
  traces = []

  def task_loss(self, params, task, *, iteration=0):
    CountingCNP.traces.append(task.support_x.shape)
    return super().task_loss(params, task, iteration=iteration)


def test_fit_traces_its_step_once_over_varying_context_sizes():
  learner = CountingCNP(encoder_sizes=(8,), decoder_sizes=(8,))
  CountingCNP.traces.clear()
  sample = lambda rng: gp.sample_tasks(rng, 4)
  _, hist = mj.fit(learner, optax.adam(1e-3), sample, num_steps=12, seed=5,
                   steps_per_call=4, progress=False, sampler_on_device=True)
  assert hist["loss"].shape == (12,) and np.all(np.isfinite(hist["loss"]))
  assert CountingCNP.traces == [(9, 1)]  # one trace for three chunks
  # ... whose batches had different numbers of context and target points.
  data_key = jax.random.split(jax.random.PRNGKey(5))[1]
  sizes = set()
  for i in range(12):
    t = sample(jax.random.fold_in(data_key, i))
    sizes.add((int(gp.point_mask(t.support_x[0]).sum()),
               int(gp.point_mask(t.query_x[0]).sum())))
  assert len(sizes) > 4, sizes


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
