"""Shared helpers for the tests (tiny problems, float64 casting, comparisons)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import metajax as mj


def to64(tree):
  return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), tree)


def flat(tree):
  return np.concatenate([np.ravel(np.asarray(a)) for a in jax.tree_util.tree_leaves(tree)])


def rel_err(a, b):
  a, b = flat(a), flat(b)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def regression_tasks(rng, num_tasks=4, support=5, query=6, dim=1, dtype=jnp.float64):
  k = jax.random.split(rng, 4)
  return mj.Task(jax.random.normal(k[0], (num_tasks, support, dim), dtype),
                 jax.random.normal(k[1], (num_tasks, support, 1), dtype),
                 jax.random.normal(k[2], (num_tasks, query, dim), dtype),
                 jax.random.normal(k[3], (num_tasks, query, 1), dtype))


def image_tasks(rng, num_tasks=3, ways=3, shots=2, query=2, size=8, channels=1,
                dtype=jnp.float64):
  k = jax.random.split(rng, 2)
  sy = jnp.tile(jnp.repeat(jnp.arange(ways), shots), (num_tasks, 1))
  qy = jnp.tile(jnp.repeat(jnp.arange(ways), query), (num_tasks, 1))
  return mj.Task(
      jax.random.normal(k[0], (num_tasks, ways * shots, size, size, channels), dtype),
      sy.astype(jnp.int32),
      jax.random.normal(k[1], (num_tasks, ways * query, size, size, channels), dtype),
      qy.astype(jnp.int32))


def first(tasks):
  return jax.tree_util.tree_map(lambda a: a[0], tasks)


def python_loop_grad(learner, params, tasks):
  """Reference meta-gradient: one eager ``jax.grad`` per task, averaged."""
  n = tasks.num_tasks
  grads = [jax.grad(lambda p: learner.task_loss(p, jax.tree_util.tree_map(
      lambda a: a[i], tasks))[0])(params) for i in range(n)]
  return jax.tree_util.tree_map(lambda *g: sum(g) / n, *grads)
