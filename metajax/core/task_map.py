"""Mapping a per-task function over a batch of tasks.

Four numerically equivalent ways, chosen per workload:

* ``'vmap'``: all tasks at once. Fastest for small models (MLPs) and on
  accelerators; for conv nets on CPU adapted weights become per-task, i.e.
  grouped convolutions, which XLA:CPU runs poorly.
* ``'map'``: ``lax.map`` over tasks, ``chunk_size`` tasks at a time through
  ``vmap`` (``lax.map(batch_size=...)``); memory of one chunk.
* ``'loop'``: a Python loop over tasks inside the traced function (no
  grouped convolutions, no while loop; compile time grows with the number of
  tasks).
* ``'python'``: not traced at all: one jitted call per task from Python. Only
  used as the reference in tests.

Every path is tested against a plain Python loop with several inner steps and
several tasks (see ``tests/test_task_map.py``): never trust one path.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

METHODS = ("vmap", "map", "loop")


def map_tasks(fn: Callable[[Any], Any], tasks: Any, *, method: str = "vmap",
              chunk_size: int | None = None) -> Any:
  """``fn`` applied to every task of ``tasks`` (leading axis), outputs stacked.

  Args:
    fn: a function of one task (a pytree without the task axis).
    tasks: pytree whose leaves carry a leading task axis ``T``.
    method: one of ``METHODS``.
    chunk_size: with ``'map'``, tasks per chunk (vmapped within a chunk);
      a remainder that does not fill a chunk is handled by ``lax.map``.
  """
  if method == "vmap":
    return jax.vmap(fn)(tasks)
  if method == "map":
    return jax.lax.map(fn, tasks, batch_size=chunk_size)
  if method == "loop":
    n = jax.tree_util.tree_leaves(tasks)[0].shape[0]
    outs = [fn(jax.tree_util.tree_map(lambda a: a[i], tasks)) for i in range(n)]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)
  raise ValueError(f"unknown task mapping {method!r}; choose one of {METHODS}")


def mean_over_tasks(fn: Callable[[Any], Any], tasks: Any, **kw) -> Any:
  """Mean over tasks of ``fn(task)`` (any pytree output)."""
  out = map_tasks(fn, tasks, **kw)
  return jax.tree_util.tree_map(lambda a: jnp.mean(a, axis=0), out)
