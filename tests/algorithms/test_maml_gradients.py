"""MAML's exact second-order meta-gradient against float64 finite differences."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metajax as mj
from metajax.models import MLP, Conv4
from tests.helpers import first, flat, image_tasks, regression_tasks, to64


def meta_loss(learner, tasks):
  return jax.jit(lambda p: jnp.mean(jax.vmap(
      lambda t: learner.task_loss(p, t)[0])(tasks)))


def test_mlp_second_order_matches_finite_differences():
  with jax.enable_x64(True):
    tasks = regression_tasks(jax.random.PRNGKey(0), num_tasks=3)
    learner = mj.MAML(MLP((6, 6), 1, activation=jnp.tanh), inner_steps=2,
                      inner_lr=0.3)
    params = to64(learner.init(jax.random.PRNGKey(1), first(tasks)))
    f = meta_loss(learner, tasks)
    exact = flat(jax.grad(f)(params))
    x0, unravel = jax.flatten_util.ravel_pytree(params)
    eps = 1e-5
    fd = np.array([(f(unravel(x0.at[i].add(eps))) - f(unravel(x0.at[i].add(-eps))))
                   / (2 * eps) for i in range(x0.size)])
    err = np.linalg.norm(exact - fd) / np.linalg.norm(fd)
    assert err <= 1e-6, err
    fo = mj.MAML(learner.model, inner_steps=2, inner_lr=0.3, first_order=True)
    fo_grad = flat(jax.grad(meta_loss(fo, tasks))(params))
    # The first-order gradient is measurably off: the test resolves the
    # second-order term.
    assert np.linalg.norm(fo_grad - fd) / np.linalg.norm(fd) > 1e3 * err


@pytest.mark.parametrize("downsample", ["maxpool", "stride"])
def test_conv_batchnorm_second_order_matches_directional_fd(downsample):
  with jax.enable_x64(True):
    tasks = image_tasks(jax.random.PRNGKey(0), num_tasks=2, ways=3, shots=2,
                        query=2, size=8)
    model = Conv4(num_outputs=3, filters=3, blocks=2, downsample=downsample)
    learner = mj.MAML(model, loss="cross_entropy", inner_steps=2, inner_lr=0.4)
    params = to64(learner.init(jax.random.PRNGKey(2), first(tasks)))
    f = meta_loss(learner, tasks)
    exact = jax.grad(f)(params)
    fo = mj.MAML(model, loss="cross_entropy", inner_steps=2, inner_lr=0.4,
                 first_order=True)
    fo_grad = jax.grad(meta_loss(fo, tasks))(params)
    x0, unravel = jax.flatten_util.ravel_pytree(params)
    ge, gf = flat(exact), flat(fo_grad)
    # ReLU and max-pool make the meta-loss piecewise smooth; a small step in
    # float64 stays within one piece.
    eps = 1e-6
    errs, fo_errs = [], []
    for k in range(4):
      v = jax.random.normal(jax.random.PRNGKey(10 + k), x0.shape, jnp.float64)
      v = v / jnp.linalg.norm(v)
      fd = (f(unravel(x0 + eps * v)) - f(unravel(x0 - eps * v))) / (2 * eps)
      errs.append(abs(float(ge @ v) - float(fd)) / abs(float(fd)))
      fo_errs.append(abs(float(gf @ v) - float(fd)) / abs(float(fd)))
    assert max(errs) <= 1e-6, errs
    assert max(fo_errs) > 1e-3, fo_errs
