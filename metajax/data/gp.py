"""1-D Gaussian-process regression tasks, as in the Conditional Neural Process paper.

Garnelo et al., "Conditional Neural Processes", ICML 2018, Sec. 4.1, and
DeepMind's neural-processes notebook (``conditional_neural_process.ipynb``,
``GPCurvesReader``): each task is a function drawn from a zero-mean GP with
squared-exponential kernel

    k(x, x') = sigma^2 exp(-(x - x')^2 / (2 l^2)) + noise^2 delta(x, x'),

``l = 0.4``, ``sigma = 1``, ``noise = 0.02`` (the jitter that keeps the
Cholesky factor stable doubles as observation noise), inputs ``x ~ U[-2, 2]``.

Point counts follow ``GPCurvesReader.generate_curves`` with
``MAX_CONTEXT_POINTS = 10`` (``tf.random_uniform(minval, maxval)``:
``maxval`` exclusive):

* training: one ``num_context ~ U{3, ..., max_context - 1}`` and one
  ``num_extra ~ U{2, ..., max_context - 1}`` per batch (shared by its
  tasks, as the notebook draws one count per batch of 64); ``num_context +
  num_extra`` inputs are drawn, the context is the first ``num_context`` and
  the *targets are all of them, context included*;
* testing (``testing=True``): the targets are a grid of ``num_grid`` points
  on ``x_range`` (``[-2, 2)`` in steps of 0.01: 400 points), the context a
  random subset of it; each task draws its own ``num_context`` (the
  notebook's test batches hold one function).

**Fixed shapes.** Counts that are not given are drawn on device (inside the
compiled sampler), and the arrays always have the largest shape those
counts allow: context ``max_context - 1`` points, training targets
``2 * (max_context - 1)``. Points past a task's counts are padding: their
inputs and targets are ``NaN`` (:data:`PAD`).
:class:`~metajax.algorithms.cnp.CNP` treats a point whose input is all
``NaN`` as absent (it averages its encoding and its loss over the real
points only), so a padded task gives the numbers of the unpadded one; a
learner that does not know the convention gets a ``NaN`` loss, which
:func:`metajax.training.fit` reports, never a silently wrong one. :func:`point_mask` and :func:`unpad` read the
padding. The sampler is jittable, so ``fit`` runs it on device and the
meta-step compiles once for the whole run (before, each of the up to
``(max_context - 3) * (max_context - 2)`` shape pairs compiled its own).

Padding changes nothing in the distribution of a task's real points: the
inputs are i.i.d., and a GP drawn jointly at ``2 * (max_context - 1)``
inputs and restricted to the first ``num_context + num_extra`` has exactly
the law of a draw at those inputs alone.

Counts given as integers (``num_context``, ``num_extra``) fix the shapes
instead and nothing is padded.
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
#: the input and target value of padding points.
PAD = float("nan")


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


def max_points(max_context: int = MAX_CONTEXT) -> tuple[int, int]:
  """``(context, targets)`` sizes of padded training batches:
  ``max_context - 1`` and ``2 * (max_context - 1)``."""
  return max_context - 1, 2 * (max_context - 1)


def sample_counts(rng: jax.Array, max_context: int = MAX_CONTEXT,
                  shape=()) -> tuple[jax.Array, jax.Array]:
  """``(num_context, num_extra)``: ``int32`` arrays of shape ``shape``.

  ``num_context ~ U{3, ..., max_context - 1}`` and
  ``num_extra ~ U{2, ..., max_context - 1}``, as the notebook's
  ``tf.random_uniform(shape=[], minval=3 (2), maxval=max_num_context,
  dtype=tf.int32)``. Jittable (counts stay on device).
  """
  if max_context < 4:
    raise ValueError(f"max_context must be >= 4, got {max_context}")
  k_nc, k_ne = jax.random.split(rng)
  return (jax.random.randint(k_nc, shape, 3, max_context),
          jax.random.randint(k_ne, shape, 2, max_context))


def _pad(a, count):
  """``a`` (``(T, N, d)``) with points ``>= count`` (``()`` or ``(T,)``) set
  to :data:`PAD`."""
  keep = jnp.arange(a.shape[1]) < jnp.reshape(count, (-1, 1))
  return jnp.where(keep[..., None], a, jnp.asarray(PAD, a.dtype))


@functools.partial(jax.jit, static_argnames=(
    "num_tasks", "max_context", "num_context", "num_extra", "testing",
    "num_grid", "x_range", "dtype"))
def _sample(rng, length_scale, sigma, noise, *, num_tasks, max_context,
            num_context, num_extra, testing, num_grid, x_range, dtype):
  """The array part of :func:`sample_tasks`, compiled once per configuration
  (counts given as ``None`` are drawn here, on device)."""
  lo, hi = x_range
  k_counts, k_data = jax.random.split(rng)
  k_x, k_y, k_perm = jax.random.split(k_data, 3)
  kw = dict(length_scale=length_scale, sigma=sigma, noise=noise)
  max_nc, _ = max_points(max_context)
  nc, ne = sample_counts(k_counts, max_context,
                         (num_tasks,) if testing else ())
  nc_len = max_nc if num_context is None else num_context
  if testing:
    # A host constant: XLA cannot recompute it differently for the gathered
    # context, so context inputs are bit-identical to grid points.
    grid = np.asarray(lo + (hi - lo) * np.arange(num_grid) / num_grid, dtype)
    x = jnp.broadcast_to(grid[None, :, None], (num_tasks, num_grid, 1))
    y = _draw(k_y, x, **kw)
    idx = jax.vmap(lambda k: jax.random.permutation(k, num_grid)[:nc_len])(
        jax.random.split(k_perm, num_tasks))
    take = lambda a: jnp.take_along_axis(a, idx[:, :, None], axis=1)
    cx, cy = take(x), take(y)
    if num_context is None:
      cx, cy = _pad(cx, nc), _pad(cy, nc)
    return Task(cx, cy, x, y)
  ne_len = max_nc if num_extra is None else num_extra
  x = jax.random.uniform(k_x, (num_tasks, nc_len + ne_len, 1), dtype, lo, hi)
  y = _draw(k_y, x, **kw)
  cx, cy = x[:, :nc_len], y[:, :nc_len]
  if num_context is not None and num_extra is not None:
    return Task(cx, cy, x, y)
  n_ctx = nc if num_context is None else num_context
  n_tot = n_ctx + (ne if num_extra is None else num_extra)
  if num_context is None:
    cx, cy = _pad(cx, n_ctx), _pad(cy, n_ctx)
  return Task(cx, cy, _pad(x, n_tot), _pad(y, n_tot))


def sample_tasks(rng: jax.Array, num_tasks: int, *,
                 max_context: int = MAX_CONTEXT,
                 num_context: int | None = None,
                 num_extra: int | None = None,
                 testing: bool = False, num_grid: int = NUM_GRID,
                 x_range=X_RANGE, length_scale=LENGTH_SCALE, sigma=SIGMA,
                 noise=NOISE, dtype=jnp.float32) -> Task:
  """A batch of GP regression tasks (context = support, targets = query).

  Jittable in ``rng`` (and the kernel parameters): random counts are drawn
  on device and padded (see the module docstring), so every call with the
  same arguments returns the same shapes.

  Args:
    rng: PRNG key.
    num_tasks: ``T``.
    max_context: exclusive upper bound of the random counts.
    num_context: context points; ``None`` draws ``U{3, ..., max_context-1}``
      (per batch in training, per task in testing) and pads the context to
      ``max_context - 1`` points.
    num_extra: training only: target points beyond the context; ``None``
      draws ``U{2, ..., max_context-1}`` per batch and pads the targets to
      ``context length + max_context - 1`` points.
    testing: targets on a ``num_grid`` grid over ``x_range`` and context a
      random subset of it (the notebook's test batches).
    num_grid: grid size for ``testing``.
    x_range, length_scale, sigma, noise: the input range and kernel.
    dtype: float dtype of the arrays.

  Returns:
    :class:`~metajax.Task` with ``support_x``/``support_y`` of shape
    ``(T, C, 1)`` and ``query_x``/``query_y`` of shape ``(T, N, 1)``
    (``C = num_context`` or ``max_context - 1``; ``N = C + num_extra``,
    ``C + max_context - 1`` or ``num_grid``). The real targets begin with
    the real context points (training), or the context is a subset of the
    targets (testing); padding points hold :data:`PAD` (``NaN``).

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
  if testing:
    need = max_points(max_context)[0] if num_context is None else num_context
    if num_grid < need:
      raise ValueError(
          f"num_grid={num_grid} is smaller than num_context={need}"
          + (" (the largest random count, max_context - 1)"
             if num_context is None else ""))
  return _sample(rng, length_scale, sigma, noise, num_tasks=int(num_tasks),
                 max_context=int(max_context), num_context=num_context,
                 num_extra=None if testing else num_extra,
                 testing=bool(testing), num_grid=int(num_grid),
                 x_range=(float(lo), float(hi)), dtype=jnp.dtype(dtype))


def point_mask(x) -> jax.Array:
  """``(..., N)`` bools: which points of inputs ``x`` (``(..., N, d)``) are
  real (an input that is all :data:`PAD` marks padding)."""
  return ~jnp.all(jnp.isnan(x), axis=-1)


def unpad(task: Task) -> Task:
  """One task (no task axis) without its padding points, as NumPy arrays.

  Host-side (the shapes depend on the values): for figures and tests.
  """
  if np.ndim(task.support_x) != 2:
    raise ValueError(
        f"unpad takes one task (points, dims), got support_x of shape "
        f"{np.shape(task.support_x)}")
  cx, cy, tx, ty = (np.asarray(a) for a in task)
  c = ~np.all(np.isnan(cx), -1)
  t = ~np.all(np.isnan(tx), -1)
  return Task(cx[c], cy[c], tx[t], ty[t])
