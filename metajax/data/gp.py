"""1-D Gaussian-process regression tasks, as in the Conditional Neural Process paper.

Garnelo et al., "Conditional Neural Processes", ICML 2018, Sec. 4.1, and
DeepMind's neural-processes notebook: each task is a function drawn from a
zero-mean GP with squared-exponential kernel

    k(x, x') = sigma^2 exp(-(x - x')^2 / (2 l^2)) + noise^2 delta(x, x'),

``l = 0.4``, ``sigma = 1``, ``noise = 0.02`` (the jitter that keeps the
Cholesky factor stable doubles as observation noise), inputs ``x ~ U[-2, 2]``.

Per batch (shared by its tasks, so a batch has one shape):

* training: ``num_context ~ U{3, ..., max_context - 1}`` context points and
  ``num_extra ~ U{2, ..., max_context - 1}`` further points are drawn; the
  *targets are all of them, context included*;
* testing (``testing=True``): the targets are a grid of ``num_grid`` points
  on ``x_range`` (``[-2, 2)`` in steps of 0.01: 400 points), the context a
  random subset of the grid.

The returned :class:`~metajax.Task` has ``support = context``
(``(T, num_context, 1)``) and ``query = targets``. Random counts change the
array shapes between batches: a jitted meta-step compiles once per
``(num_context, num_targets)`` pair (at most ``(max_context - 3) *
(max_context - 2)`` of them); pass ``num_context``/``num_extra`` to fix them.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metajax.core.tasks import Task, check_count

LENGTH_SCALE = 0.4
SIGMA = 1.0
NOISE = 2e-2
X_RANGE = (-2.0, 2.0)
MAX_CONTEXT = 10
NUM_GRID = 400


def se_kernel(x1: jax.Array, x2: jax.Array, *, length_scale=LENGTH_SCALE,
              sigma=SIGMA) -> jax.Array:
  """Squared-exponential kernel: ``(..., N, d), (..., M, d) -> (..., N, M)``."""
  diff = (x1[..., :, None, :] - x2[..., None, :, :]) / length_scale
  return sigma ** 2 * jnp.exp(-0.5 * jnp.sum(diff * diff, -1))


def sample_functions(rng: jax.Array, x: jax.Array, *,
                     length_scale=LENGTH_SCALE, sigma=SIGMA,
                     noise=NOISE) -> jax.Array:
  """GP draws at inputs ``x`` (``(T, N, 1)``): ``y = chol(K + noise^2 I) z``.

  Returns ``(T, N, 1)``; each task's draw is independent.
  """
  if x.ndim != 3:
    raise ValueError(f"x must be (tasks, points, dims), got shape {x.shape}")
  _check_kernel(length_scale, sigma, noise)
  return _draw(rng, x, length_scale=length_scale, sigma=sigma, noise=noise)


def _check_kernel(length_scale, sigma, noise):
  if length_scale <= 0 or sigma <= 0 or noise < 0:
    raise ValueError(
        f"need length_scale > 0, sigma > 0, noise >= 0; got {length_scale}, "
        f"{sigma}, {noise}")


def _draw(rng, x, *, length_scale, sigma, noise):
  n = x.shape[1]
  k = se_kernel(x, x, length_scale=length_scale, sigma=sigma)
  k = k + noise ** 2 * jnp.eye(n, dtype=x.dtype)
  chol = jnp.linalg.cholesky(k)
  z = jax.random.normal(rng, x.shape[:2] + (1,), x.dtype)
  return chol @ z


def sample_counts(rng: jax.Array, max_context: int = MAX_CONTEXT
                  ) -> tuple[int, int]:
  """Host ints ``(num_context, num_extra)`` of a training batch.

  ``num_context ~ U{3, ..., max_context - 1}`` and
  ``num_extra ~ U{2, ..., max_context - 1}``, as in the notebook.
  """
  if max_context < 4:
    raise ValueError(f"max_context must be >= 4, got {max_context}")
  k_nc, k_ne = jax.random.split(rng)
  return (int(jax.random.randint(k_nc, (), 3, max_context)),
          int(jax.random.randint(k_ne, (), 2, max_context)))


@functools.partial(jax.jit, static_argnames=(
    "num_tasks", "num_context", "num_extra", "testing", "num_grid", "x_range",
    "dtype"))
def _sample(rng, length_scale, sigma, noise, *, num_tasks, num_context,
            num_extra, testing, num_grid, x_range, dtype):
  """The array part of :func:`sample_tasks`, compiled once per shape."""
  lo, hi = x_range
  k_x, k_y, k_perm = jax.random.split(rng, 3)
  kw = dict(length_scale=length_scale, sigma=sigma, noise=noise)
  if testing:
    # A host constant: XLA cannot recompute it differently for the gathered
    # context, so context inputs are bit-identical to grid points.
    grid = np.asarray(lo + (hi - lo) * np.arange(num_grid) / num_grid, dtype)
    x = jnp.broadcast_to(grid[None, :, None], (num_tasks, num_grid, 1))
    y = _draw(k_y, x, **kw)
    idx = jax.vmap(lambda k: jax.random.permutation(k, num_grid)[:num_context])(
        jax.random.split(k_perm, num_tasks))
    take = lambda a: jnp.take_along_axis(a, idx[:, :, None], axis=1)
    return Task(take(x), take(y), x, y)
  x = jax.random.uniform(k_x, (num_tasks, num_context + num_extra, 1), dtype,
                         lo, hi)
  y = _draw(k_y, x, **kw)
  return Task(x[:, :num_context], y[:, :num_context], x, y)


def sample_tasks(rng: jax.Array, num_tasks: int, *,
                 max_context: int = MAX_CONTEXT,
                 num_context: int | None = None,
                 num_extra: int | None = None,
                 testing: bool = False, num_grid: int = NUM_GRID,
                 x_range=X_RANGE, length_scale=LENGTH_SCALE, sigma=SIGMA,
                 noise=NOISE, dtype=jnp.float32) -> Task:
  """A batch of GP regression tasks (context = support, targets = query).

  Args:
    rng: PRNG key.
    num_tasks: ``T``.
    max_context: exclusive upper bound of the random counts.
    num_context: context points; ``None`` draws ``U{3, ..., max_context-1}``.
    num_extra: training only: target points beyond the context; ``None``
      draws ``U{2, ..., max_context-1}``.
    testing: targets on a ``num_grid`` grid over ``x_range`` and context a
      random subset of it (the notebook's test batches).
    num_grid: grid size for ``testing``.
    x_range, length_scale, sigma, noise: the input range and kernel.
    dtype: float dtype of the arrays.

  Returns:
    :class:`~metajax.Task` with ``support_x``/``support_y`` of shape
    ``(T, num_context, 1)`` and ``query_x``/``query_y`` of shape
    ``(T, num_targets, 1)``; the first ``num_context`` targets are the
    context points (training), or the context is a subset of the targets
    (testing).

  Raises:
    ValueError: a count that is not an integer in range, a bad ``x_range``
      or kernel, naming the argument (before anything is traced).
  """
  num_tasks = check_count("num_tasks", num_tasks)
  max_context = check_count("max_context", max_context, 4)
  num_grid = check_count("num_grid", num_grid)
  if num_context is not None:
    num_context = check_count("num_context", num_context)
  if num_extra is not None:
    num_extra = check_count("num_extra", num_extra, 0)
  lo, hi = x_range
  if not lo < hi:
    raise ValueError(f"x_range must be (low, high) with low < high, got "
                     f"{x_range}")
  _check_kernel(length_scale, sigma, noise)
  k_counts, k_data = jax.random.split(rng)
  nc, ne = sample_counts(k_counts, max_context)
  num_context = nc if num_context is None else num_context
  num_extra = ne if num_extra is None else num_extra
  if testing and num_grid < num_context:
    raise ValueError(
        f"num_grid={num_grid} is smaller than num_context={num_context}")
  return _sample(k_data, length_scale, sigma, noise, num_tasks=int(num_tasks),
                 num_context=int(num_context),
                 num_extra=0 if testing else int(num_extra),
                 testing=bool(testing), num_grid=int(num_grid),
                 x_range=(float(lo), float(hi)), dtype=jnp.dtype(dtype))
