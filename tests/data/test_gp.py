"""GP function sampler: kernel, empirical covariance, task layout, bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax import Task
from metajax.data import gp


def test_kernel_matches_formula():
  x1 = np.array([[-1.0], [0.0], [0.3]], np.float32)
  x2 = np.array([[0.5], [2.0]], np.float32)
  k = np.asarray(gp.se_kernel(x1, x2, length_scale=0.4, sigma=1.3))
  ref = 1.3 ** 2 * np.exp(-(x1 - x2.T) ** 2 / (2 * 0.4 ** 2))
  np.testing.assert_allclose(k, ref, rtol=1e-5)


@pytest.mark.parametrize("length_scale", [0.4, 1.0])
def test_empirical_covariance_approaches_kernel(length_scale):
  x = np.array([-1.5, -0.6, -0.4, 0.0, 0.3, 1.8], np.float32)[:, None]
  draws = 4000
  xs = jnp.broadcast_to(x[None], (draws,) + x.shape)
  y = np.asarray(gp.sample_functions(jax.random.PRNGKey(0), xs,
                                     length_scale=length_scale))[..., 0]
  ref = np.asarray(gp.se_kernel(x, x, length_scale=length_scale))
  ref = ref + gp.NOISE ** 2 * np.eye(len(x))
  emp = np.cov(y, rowvar=False)
  # Standard error of a covariance entry at 4000 draws is <= ~0.03.
  np.testing.assert_allclose(emp, ref, atol=0.1)
  np.testing.assert_allclose(y.mean(0), 0.0, atol=0.1)


def test_random_counts_cover_the_notebook_ranges():
  counts = np.array([gp.sample_counts(jax.random.PRNGKey(s))
                     for s in range(200)])
  assert counts[:, 0].min() == 3 and counts[:, 0].max() == 9
  assert counts[:, 1].min() == 2 and counts[:, 1].max() == 9


def test_training_batch_layout():
  for seed in range(4):
    t = gp.sample_tasks(jax.random.PRNGKey(seed), 3)
    assert isinstance(t, Task)
    nc, nt = t.support_x.shape[1], t.query_x.shape[1]
    assert (nc, nt - nc) == gp.sample_counts(
        jax.random.split(jax.random.PRNGKey(seed))[0])
    assert t.support_x.shape == (3, nc, 1) and t.query_y.shape == (3, nt, 1)
    # Targets include the context (its first num_context points).
    np.testing.assert_array_equal(t.query_x[:, :nc], t.support_x)
    np.testing.assert_array_equal(t.query_y[:, :nc], t.support_y)
    assert np.all(np.abs(np.asarray(t.query_x)) <= 2.0)
    assert not np.array_equal(t.query_y[0], t.query_y[1])  # distinct functions
  fixed = gp.sample_tasks(jax.random.PRNGKey(0), 2, num_context=4, num_extra=6)
  assert fixed.support_x.shape == (2, 4, 1)
  assert fixed.query_x.shape == (2, 10, 1)


def test_testing_batch_is_a_grid_with_context_subset():
  t = gp.sample_tasks(jax.random.PRNGKey(0), 2, testing=True, num_context=7)
  assert t.query_x.shape == (2, 400, 1) and t.support_x.shape == (2, 7, 1)
  np.testing.assert_allclose(np.diff(np.asarray(t.query_x[0, :, 0])), 0.01,
                             rtol=1e-3)
  for i in range(2):
    qx, qy = np.asarray(t.query_x[i, :, 0]), np.asarray(t.query_y[i, :, 0])
    for x, y in zip(np.asarray(t.support_x[i, :, 0]),
                    np.asarray(t.support_y[i, :, 0])):
      j = np.flatnonzero(qx == x)
      assert j.size == 1 and qy[j[0]] == y
  # Context points differ between the two tasks (independent subsets).
  assert not np.array_equal(t.support_x[0], t.support_x[1])


def test_bad_input_raises():
  with pytest.raises(ValueError, match="num_tasks"):
    gp.sample_tasks(jax.random.PRNGKey(0), 0)
  with pytest.raises(ValueError, match="max_context"):
    gp.sample_tasks(jax.random.PRNGKey(0), 2, max_context=3)
  with pytest.raises(ValueError, match="x_range"):
    gp.sample_tasks(jax.random.PRNGKey(0), 2, x_range=(1.0, -1.0))
  with pytest.raises(ValueError, match="num_grid"):
    gp.sample_tasks(jax.random.PRNGKey(0), 2, testing=True, num_context=9,
                    num_grid=5)
  with pytest.raises(ValueError, match="length_scale"):
    gp.sample_functions(jax.random.PRNGKey(0), jnp.zeros((1, 3, 1)),
                        length_scale=0.0)
  with pytest.raises(ValueError, match="x must be"):
    gp.sample_functions(jax.random.PRNGKey(0), jnp.zeros((3, 1)))
