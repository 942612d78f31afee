"""Shared helpers for the tests (tiny problems, float64 casting, comparisons)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

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


def class_tasks(seed, num_tasks=4, ways=3, shots=2, query=3, dim=10,
                noise=0.5, image=None):
  """Tasks whose classes are noisy copies of random per-task prototypes."""
  rng = np.random.default_rng(seed)
  shape = (dim,) if image is None else image
  out = []
  for _ in range(num_tasks):
    protos = rng.normal(size=(ways,) + shape)
    sy = np.repeat(np.arange(ways), shots)
    qy = np.repeat(np.arange(ways), query)
    out.append((protos[sy] + noise * rng.normal(size=(len(sy),) + shape), sy,
                protos[qy] + noise * rng.normal(size=(len(qy),) + shape), qy))
  cols = list(zip(*out))
  return mj.Task(np.stack(cols[0]).astype(np.float32),
                 np.stack(cols[1]).astype(np.int32),
                 np.stack(cols[2]).astype(np.float32),
                 np.stack(cols[3]).astype(np.int32))


def one(tasks, i=0):
  return jax.tree_util.tree_map(lambda a: a[i], tasks)


def train_loss_drop(learner, tasks, steps=30, lr=1e-2, seed=0):
  """(loss before, loss after) meta-training on a fixed batch of tasks."""
  opt = optax.adam(lr)
  state = mj.init_state(learner, opt, jax.random.PRNGKey(seed), one(tasks))
  step = mj.make_meta_step(learner, opt)
  losses = []
  for _ in range(steps):
    state, m = step(state, tasks)
    losses.append(float(m["loss"]))
  return losses[0], losses[-1]
