"""The core: tasks, the learner contract and meta-step, task mapping, the inner loop.

* :mod:`~metajax.core.tasks`: :class:`Task` and its boundary checks;
* :mod:`~metajax.core.learner`: the :class:`Learner` contract,
  :class:`MetaState`, :func:`init_state` and the one :func:`make_meta_step`;
* :mod:`~metajax.core.task_map`: tasks mapped by ``vmap``, chunked
  ``lax.map`` or a traced loop;
* :mod:`~metajax.core.sharding`: task batches split over devices (one
  program, the meta-gradient averaged across devices);
* :mod:`~metajax.core.inner`: the inner loop and its composable update rules;
* :mod:`~metajax.core.remat`: rematerialisation schedules of the inner loop;
* :mod:`~metajax.core.losses`, :mod:`~metajax.core.masks`: per-task losses
  and parameter masks.
"""
from metajax.core import (inner, learner, losses, masks, remat, sharding,
                          task_map, tasks)
from metajax.core.inner import adapt
from metajax.core.learner import Learner, MetaState, init_state, make_meta_step
from metajax.core.tasks import Task, check_tasks, check_ways, task_slice

__all__ = [
    "Learner", "MetaState", "Task", "adapt", "check_tasks", "check_ways",
    "init_state", "inner", "learner", "losses", "make_meta_step", "masks",
    "remat", "sharding", "task_map", "task_slice", "tasks",
]
