"""Sinusoid regression tasks exactly as in MAML (Finn et al., 2017, Sec. 5.1).

Each task is ``y = A sin(x - phi)`` with amplitude ``A ~ U[0.1, 5]``, phase
``phi ~ U[0, pi]`` and inputs ``x ~ U[-5, 5]``; support and query points are
drawn independently from the same task. Everything is sampled on device with
``jax.random``, so a meta-step never waits on the host.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metajax.core.tasks import Task, check_count

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


class SinusoidParams(NamedTuple):
  """Per-task amplitude and phase, each ``(T,)``."""
  amplitude: jax.Array
  phase: jax.Array


def sinusoid(params: SinusoidParams, x: jax.Array) -> jax.Array:
  """``A sin(x - phi)`` for ``x`` of shape ``(T, N, 1)`` -> ``(T, N, 1)``."""
  a = params.amplitude[:, None, None]
  p = params.phase[:, None, None]
  return a * jnp.sin(x - p)


def sample_params(rng: jax.Array, num_tasks: int, *, amplitude=AMPLITUDE,
                  phase=PHASE, dtype=jnp.float32) -> SinusoidParams:
  """Task parameters ``(A, phi)`` for ``num_tasks`` tasks."""
  ka, kp = jax.random.split(rng)
  return SinusoidParams(
      jax.random.uniform(ka, (num_tasks,), dtype, *amplitude),
      jax.random.uniform(kp, (num_tasks,), dtype, *phase))


def sample_tasks(rng: jax.Array, num_tasks: int, support: int, query: int, *,
                 amplitude=AMPLITUDE, phase=PHASE, x_range=X_RANGE,
                 dtype=jnp.float32, return_params: bool = False):
  """A batch of sinusoid tasks.

  Args:
    rng: PRNG key.
    num_tasks: tasks ``T`` in the batch.
    support: ``K``, support points per task.
    query: query points per task.
    amplitude, phase, x_range: ``(low, high)`` of the uniform distributions.
    return_params: also return the :class:`SinusoidParams`.

  Returns:
    A :class:`~metajax.Task` with ``x``/``y`` of shape ``(T, K, 1)`` and
    ``(T, query, 1)`` (and the task parameters if asked).

  Raises:
    ValueError: a count that is not an integer >= 1 (checked before tracing,
      where it would be an ``MLIRError``).
  """
  num_tasks = check_count("num_tasks", num_tasks)
  support = check_count("support", support)
  query = check_count("query", query)
  kp, kx = jax.random.split(rng)
  params = sample_params(kp, num_tasks, amplitude=amplitude, phase=phase,
                         dtype=dtype)
  x = jax.random.uniform(kx, (num_tasks, support + query, 1), dtype, *x_range)
  y = sinusoid(params, x)
  tasks = Task(x[:, :support], y[:, :support], x[:, support:], y[:, support:])
  return (tasks, params) if return_params else tasks
