"""GP function sampler: kernel, empirical covariance, counts drawn as in the
notebook, padded fixed-shape batches, task layout, bad input."""
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
  # The notebook: tf.random_uniform(minval=3 (2), maxval=MAX_CONTEXT_POINTS
  # = 10), maxval exclusive, so U{3..9} and U{2..9}, each value equally
  # likely.
  nc, ne = (np.asarray(a) for a in gp.sample_counts(
      jax.random.PRNGKey(0), shape=(7000,)))
  for counts, values in ((nc, range(3, 10)), (ne, range(2, 10))):
    assert set(np.unique(counts)) == set(values)
    freq = np.bincount(counts)[values.start:] / counts.size
    np.testing.assert_allclose(freq, 1 / len(values), atol=0.02)
  one = gp.sample_counts(jax.random.PRNGKey(3))
  assert all(np.shape(a) == () and a.dtype == jnp.int32 for a in one)
  assert int(gp.sample_counts(jax.random.PRNGKey(3), 4)[0]) == 3


def _real(mask):
  """Per task, how many points are real; padding only after the real ones."""
  mask = np.asarray(mask)
  n = mask.sum(-1)
  np.testing.assert_array_equal(mask, np.arange(mask.shape[-1]) < n[:, None])
  return n


def test_training_batch_layout():
  for seed in range(4):
    key = jax.random.PRNGKey(seed)
    t = gp.sample_tasks(key, 3)
    assert isinstance(t, Task)
    # Always the largest shape: 9 context points, 18 targets.
    assert t.support_x.shape == t.support_y.shape == (3, 9, 1)
    assert t.query_x.shape == t.query_y.shape == (3, 18, 1)
    assert gp.max_points() == (9, 18)
    nc = _real(gp.point_mask(t.support_x))
    nt = _real(gp.point_mask(t.query_x))
    want = [int(c) for c in gp.sample_counts(jax.random.split(key)[0])]
    # One count per batch, as in the notebook.
    assert set(nc) == {want[0]} and set(nt) == {want[0] + want[1]}
    nc, nt = want[0], sum(want)
    # Padding: NaN inputs and targets; real points finite.
    for a, n in ((t.support_x, nc), (t.support_y, nc), (t.query_x, nt),
                 (t.query_y, nt)):
      a = np.asarray(a)
      assert np.all(np.isnan(a[:, n:])) and np.all(np.isfinite(a[:, :n]))
    # Targets include the context (its first num_context points).
    np.testing.assert_array_equal(t.query_x[:, :nc], t.support_x[:, :nc])
    np.testing.assert_array_equal(t.query_y[:, :nc], t.support_y[:, :nc])
    assert np.all(np.abs(np.asarray(t.query_x[:, :nt])) <= 2.0)
    assert not np.array_equal(t.query_y[0], t.query_y[1])  # distinct functions
    u = gp.unpad(jax.tree_util.tree_map(lambda a: a[1], t))
    assert u.support_x.shape == (nc, 1) and u.query_y.shape == (nt, 1)
    np.testing.assert_array_equal(u.query_y, t.query_y[1, :nt])
  fixed = gp.sample_tasks(jax.random.PRNGKey(0), 2, num_context=4, num_extra=6)
  assert fixed.support_x.shape == (2, 4, 1)
  assert fixed.query_x.shape == (2, 10, 1)
  assert np.all(np.isfinite(np.asarray(fixed.query_y)))
  # One count fixed, the other drawn: only the drawn one is padded.
  half = gp.sample_tasks(jax.random.PRNGKey(0), 2, num_context=4)
  assert half.support_x.shape == (2, 4, 1) and half.query_x.shape == (2, 13, 1)
  assert set(_real(gp.point_mask(half.support_x))) == {4}
  assert 6 <= _real(gp.point_mask(half.query_x))[0] <= 13


def test_sampler_is_jittable_with_one_shape():
  sample = jax.jit(lambda k: gp.sample_tasks(k, 2))
  counts = set()
  for seed in range(12):
    t = sample(jax.random.PRNGKey(seed))
    assert t.support_x.shape == (2, 9, 1) and t.query_x.shape == (2, 18, 1)
    counts.add((int(gp.point_mask(t.support_x)[0].sum()),
                int(gp.point_mask(t.query_x)[0].sum())))
    # Same draw as outside jit.
    np.testing.assert_array_equal(
        np.asarray(t.query_y),
        np.asarray(gp.sample_tasks(jax.random.PRNGKey(seed), 2).query_y))
  assert len(counts) > 5
  assert sample._cache_size() == 1


def test_padded_draws_keep_the_gp_law():
  # Real points: inputs U[-2, 2], and the targets at the first n inputs have
  # the kernel's covariance (one joint draw at 12 inputs restricted to n).
  t = gp.sample_tasks(jax.random.PRNGKey(0), 4000, num_context=3)
  n = _real(gp.point_mask(t.query_x))[0]
  x = np.asarray(t.query_x[:, :n, 0], np.float64)
  np.testing.assert_allclose([x.mean(), x.var()], [0.0, 4 / 3], atol=0.05)
  y = np.asarray(t.query_y[:, :n, 0], np.float64)
  d = x[:, :, None] - x[:, None, :]
  k = np.exp(-d ** 2 / (2 * gp.LENGTH_SCALE ** 2)) + gp.NOISE ** 2 * np.eye(n)
  # E[y_i y_j] = E[k(x_i, x_j)] over the inputs' law.
  np.testing.assert_allclose(np.einsum("ti,tj->ij", y, y) / len(y),
                             k.mean(0), atol=0.1)
  np.testing.assert_allclose(y.mean(0), 0.0, atol=0.1)


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


def test_testing_batch_draws_a_context_size_per_task():
  key = jax.random.PRNGKey(1)
  t = gp.sample_tasks(key, 16, testing=True)
  assert t.query_x.shape == (16, 400, 1) and t.support_x.shape == (16, 9, 1)
  nc = _real(gp.point_mask(t.support_x))
  np.testing.assert_array_equal(
      nc, gp.sample_counts(jax.random.split(key)[0], shape=(16,))[0])
  assert len(set(nc)) > 3 and set(nc) <= set(range(3, 10))
  assert np.all(gp.point_mask(t.query_x))  # the grid is never padded
  for i in range(16):
    u = gp.unpad(jax.tree_util.tree_map(lambda a: a[i], t))
    assert len(u.support_x) == nc[i] == len(np.unique(u.support_x))
    assert np.all(np.isin(u.support_x, u.query_x))
    assert np.all(np.isnan(np.asarray(t.support_y[i, nc[i]:])))


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
  with pytest.raises(ValueError, match="num_grid=8 is smaller"):
    gp.sample_tasks(jax.random.PRNGKey(0), 2, testing=True, num_grid=8)
  with pytest.raises(ValueError, match="length_scale"):
    gp.sample_functions(jax.random.PRNGKey(0), jnp.zeros((1, 3, 1)),
                        length_scale=0.0)
  with pytest.raises(ValueError, match="x must be"):
    gp.sample_functions(jax.random.PRNGKey(0), jnp.zeros((3, 1)))
  with pytest.raises(ValueError, match="one task"):
    gp.unpad(gp.sample_tasks(jax.random.PRNGKey(0), 2))
