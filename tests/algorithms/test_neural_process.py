"""Latent NP and ANP: attention, the ELBO and the predictive likelihood
against independent Monte-Carlo and scipy computations; training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from metajax.algorithms import registry
from metajax.algorithms.cnp import CNP
from metajax.algorithms.neural_process import NeuralProcess, NPModel, gaussian_kl
from metajax.core.tasks import task_slice
from metajax.data import gp
from tests.helpers import train_loss_drop

SMALL = dict(latent_sizes=(8, 8), num_latents=4, deterministic_sizes=(8, 8),
             decoder_sizes=(8,), attention_sizes=(8,), num_heads=2)


def _task(seed=0):
  return task_slice(gp.sample_tasks(jax.random.PRNGKey(seed), 2,
                                    max_context=8), 0)


def test_attention_weights_sum_to_one_and_skip_padding():
  model = NPModel(**{k: v for k, v in SMALL.items()}, attention="multihead")
  cx = jnp.array([[0.1], [0.5], [jnp.nan], [-0.7], [jnp.nan]])
  cy = jnp.array([[1.0], [0.0], [jnp.nan], [2.0], [jnp.nan]])
  tx = jnp.linspace(-1, 1, 6)[:, None]
  variables = model.init(jax.random.PRNGKey(0), cx, cy, tx, tx)
  _, w = model.apply(variables, cx, cy, tx, return_weights=True,
                     method=NPModel.deterministic)
  assert w.shape == (2, 6, 5)
  np.testing.assert_allclose(np.asarray(w.sum(-1)), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(w[..., [2, 4]]), 0.0)
  assert np.asarray(w).std() > 0  # not uniform: the targets attend


def test_elbo_terms_against_monte_carlo():
  with jax.enable_x64(True):
    t = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), _task(1))
    learner = NeuralProcess(**SMALL)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64),
                                    learner.init(jax.random.PRNGKey(2), t))
    # the KL, analytic, against E_q[log q(z) - log p(z)] by sampling
    mu_q, sd_q = learner._apply(params, t.query_x, t.query_y,
                                method=NPModel.latent)
    mu_p, sd_p = learner._apply(params, t.support_x, t.support_y,
                                method=NPModel.latent)
    rng = np.random.default_rng(0)
    mu_q, sd_q, mu_p, sd_p = map(np.asarray, (mu_q, sd_q, mu_p, sd_p))
    z = mu_q + sd_q * rng.normal(size=(200_000, mu_q.size))
    mc = (stats.norm.logpdf(z, mu_q, sd_q)
          - stats.norm.logpdf(z, mu_p, sd_p)).sum(1)
    kl = float(gaussian_kl(mu_q, sd_q, mu_p, sd_p))
    assert abs(mc.mean() - kl) < 4 * mc.std() / np.sqrt(mc.size) + 1e-9
    # the expected log-likelihood term: mean over keys of the one-sample
    # estimate against scipy on latents drawn by numpy
    keys = jax.random.split(jax.random.PRNGKey(3), 4000)
    est = jax.jit(jax.vmap(lambda k: learner.elbo_terms(params, t, k)[0]))(keys)
    mask = ~np.all(np.isnan(np.asarray(t.query_x)), -1)  # real targets
    qx = np.where(mask[:, None], np.asarray(t.query_x), 0.0)
    qy = np.asarray(t.query_y)[mask]
    rep = learner._apply(params, t.support_x, t.support_y, jnp.asarray(qx),
                         method=NPModel.deterministic)
    zs = mu_q + sd_q * rng.normal(size=(4000, mu_q.size))
    dec = jax.jit(jax.vmap(lambda zz: learner._apply(
        params, rep, zz, jnp.asarray(qx), method=NPModel.decode)))(
            jnp.asarray(zs))
    lp = stats.norm.logpdf(qy[None], np.asarray(dec.mean)[:, mask],
                           np.asarray(dec.stddev)[:, mask]).sum(-1).mean(-1)
    se = np.hypot(np.asarray(est).std(), lp.std()) / np.sqrt(4000)
    assert abs(float(np.mean(est)) - lp.mean()) < 4 * se


def test_predictive_likelihood_against_scipy():
  t = _task(2)
  mask = ~np.all(np.isnan(np.asarray(t.query_x)), -1)
  y = np.asarray(t.query_y)[mask]
  for name in ("np", "anp"):
    learner = registry.make(name, None, **SMALL, eval_samples=5)
    params = learner.init(jax.random.PRNGKey(0), t)
    got = learner.evaluate(params, t)
    state = learner.adapt(params, t.support_x, t.support_y)
    qx = jnp.where(jnp.asarray(mask)[:, None], t.query_x, 0.0)
    mix = learner._mixture(params, state, qx, learner._eval_key(state))
    dens = stats.norm.pdf(y[None, :, 0], np.asarray(mix.mean)[:, mask, 0],
                          np.asarray(mix.stddev)[:, mask, 0]).mean(0)
    np.testing.assert_allclose(float(got["loss"][0]), -np.log(dens).mean(),
                               rtol=1e-4)
    mean = np.asarray(mix.mean)[:, mask, 0].mean(0)
    np.testing.assert_allclose(float(got["mse"][0]),
                               np.mean((mean - y[:, 0]) ** 2), rtol=1e-4)
  cnp = CNP(encoder_sizes=(8, 8), decoder_sizes=(8,))
  p = cnp.init(jax.random.PRNGKey(0), t)
  pred = cnp.predict(p, cnp.adapt(p, t.support_x, t.support_y),
                     jnp.where(jnp.asarray(mask)[:, None], t.query_x, 0.0))
  want = -stats.norm.logpdf(y[:, 0], np.asarray(pred.mean)[mask, 0],
                            np.asarray(pred.stddev)[mask, 0]).mean()
  np.testing.assert_allclose(float(cnp.evaluate(p, t)["loss"][0]), want,
                             rtol=1e-4)


@pytest.mark.parametrize("name", ["np", "anp"])
def test_training_lowers_the_loss(name):
  tasks = gp.sample_tasks(jax.random.PRNGKey(4), 8, max_context=8)
  learner = registry.make(name, None, **SMALL)
  before, after = train_loss_drop(learner, tasks, steps=60, lr=1e-2)
  assert after < before
  with pytest.raises(ValueError, match="builds its own"):
    registry.make(name, object())
  with pytest.raises(ValueError, match="num_heads"):
    NeuralProcess(**{**SMALL, "num_heads": 3}, attention="multihead")
