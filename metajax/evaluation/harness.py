"""Meta-test evaluation: many held-out tasks, a 95% interval, JSON results.

:func:`evaluate` runs ``learner.evaluate(params, task, steps=...)`` on every
test task (``jax.lax.map`` or ``vmap`` over tasks under one ``jit``) and
reports the mean query accuracy (or MSE for regression) over ``n`` tasks
(default 600, as in MAML and ProtoNets) with the 95% confidence half-width

    ci95 = 1.96 * sd / sqrt(n)      (sd over tasks, ddof = 0),

see :func:`metajax.evaluation.stats.mean_ci95`, plus the same summary after every inner
step (the adaptation curve). Test tasks come from a fixed seed (task ``i``
from ``fold_in(key(seed), i)``), so two methods evaluated with the same seed
see the same tasks and :func:`compare` can report the paired difference.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from metajax.evaluation import stats
from metajax.core import task_map as task_map_lib
from metajax.core.tasks import Task, check_tasks

DEFAULT_NUM_TASKS = 600


# -- results -------------------------------------------------------------------
def _summary(values: np.ndarray) -> dict:
  mean, ci = stats.mean_ci95(values, axis=0)
  return {"mean": np.asarray(mean).tolist(), "ci95": np.asarray(ci).tolist()}


@dataclasses.dataclass
class EvalResult:
  """Summary of a meta-test run.

  Attributes:
    metric: the headline metric (``'accuracy'`` or ``'loss'``).
    mean, ci95: its mean over tasks after the last inner step, and the 95%
      half-width ``1.96 sd / sqrt(n)``.
    num_tasks: ``n``.
    steps: inner steps at test time (``None``: the learner's default).
    curves: per metric, ``{'mean': [...], 'ci95': [...]}`` after 0, 1, ...,
      ``steps`` inner steps (one entry when the learner reports no curve).
    per_task: ``(n, L)`` per task values of every metric (``L`` = curve
      length), for paired comparisons.
    config: anything describing the run (learner, sampler, seed).
  """
  metric: str
  mean: float
  ci95: float
  num_tasks: int
  steps: int | None
  curves: dict
  per_task: dict
  config: dict

  def to_dict(self, per_task: bool = False) -> dict:
    d = {"metric": self.metric, "mean": self.mean, "ci95": self.ci95,
         "num_tasks": self.num_tasks, "steps": self.steps,
         "curves": self.curves, "config": self.config}
    if per_task:
      d["per_task"] = {k: np.asarray(v).tolist()
                       for k, v in self.per_task.items()}
    return d

  def to_json(self, path=None, *, per_task: bool = False) -> str:
    """JSON text of :meth:`to_dict`; also written to ``path`` if given."""
    text = json.dumps(self.to_dict(per_task), indent=2, default=_jsonable)
    if path is not None:
      Path(path).write_text(text + "\n")
    return text

  def __str__(self) -> str:
    if self.metric == "accuracy":
      return (f"accuracy {100 * self.mean:.2f}% +- {100 * self.ci95:.2f}% "
              f"(95% CI, {self.num_tasks} tasks)")
    return (f"{self.metric} {self.mean:.4g} +- {self.ci95:.2g} "
            f"(95% CI, {self.num_tasks} tasks)")


def _jsonable(o):
  if isinstance(o, (np.generic,)):
    return o.item()
  if isinstance(o, (np.ndarray, jax.Array)):
    return np.asarray(o).tolist()
  return str(o)


# -- the harness ---------------------------------------------------------------
def _task_batches(tasks, num_tasks: int, seed: int, batch_size: int):
  """Yields ``Task`` batches from a sampler, a ``Task`` or ``fn(rng, n)``."""
  if isinstance(tasks, Task):
    for start in range(0, tasks.num_tasks, batch_size):
      yield jax.tree_util.tree_map(lambda a: a[start:start + batch_size], tasks)
    return
  if hasattr(tasks, "test_tasks"):  # metajax.data.sampler.EpisodeSampler
    yield from tasks.test_tasks(seed, num_tasks, batch_size)
    return
  if callable(tasks):
    base = jax.random.key(seed)
    for b, start in enumerate(range(0, num_tasks, batch_size)):
      yield tasks(jax.random.fold_in(base, b),
                  min(batch_size, num_tasks - start))
    return
  raise ValueError(
      "tasks must be a metajax.Task batch, an EpisodeSampler or a function "
      f"(rng, n) -> Task; got {type(tasks).__name__}")


def _pad(tasks: Task, size: int) -> Task:
  """Pads a batch to ``size`` tasks by repeating task 0 (avoids a recompile)."""
  n = tasks.num_tasks
  if n == size:
    return tasks
  return jax.tree_util.tree_map(
      lambda a: jnp.concatenate([a, jnp.repeat(a[:1], size - n, axis=0)]),
      tasks)


def make_evaluator(learner, *, steps: int | None = None,
                   task_map: str = "map", chunk_size: int | None = None
                   ) -> Callable[[Any, Task], dict]:
  """``jit(params, tasks, model_state=None) -> metrics``: ``learner.evaluate``
  mapped over tasks.

  Each metric comes back as ``(T,)`` or ``(T, steps + 1)`` (a curve over
  inner steps, for learners that report one). ``model_state`` (running
  batch-norm statistics) is an argument, not a constant, so the cache holds:
  per (hashable) learner and settings, evaluating checkpoint after
  checkpoint compiles once.
  """
  try:
    return _evaluator(learner, steps, task_map, chunk_size)
  except TypeError:  # an unhashable learner: build a fresh one
    return _evaluator.__wrapped__(learner, steps, task_map, chunk_size)


@functools.lru_cache(maxsize=32)
def _evaluator(learner, steps, task_map, chunk_size):
  if task_map not in task_map_lib.METHODS:
    raise ValueError(f"unknown task mapping {task_map!r}; choose one of "
                     f"{task_map_lib.METHODS}")

  def run(params, tasks, model_state=None):
    evaluator = (learner if model_state is None
                 else learner.with_model_state(model_state))
    return task_map_lib.map_tasks(
        lambda t: evaluator.evaluate(params, t, steps=steps), tasks,
        method=task_map, chunk_size=chunk_size)

  return jax.jit(run)


def evaluate(learner, params, tasks, *, num_tasks: int = DEFAULT_NUM_TASKS,
             seed: int = 0, steps: int | None = None, batch_size: int = 100,
             task_map: str = "map", chunk_size: int | None = None,
             metric: str | None = None, config: dict | None = None,
             check: bool = True, model_state=None) -> EvalResult:
  """Meta-test accuracy (or loss) over ``num_tasks`` tasks with a 95% CI.

  Args:
    learner: a :class:`metajax.Learner` (anything with ``evaluate``).
    params: its trained meta-parameters.
    tasks: where test tasks come from:
      an :class:`~metajax.data.sampler.EpisodeSampler` (task ``i`` is drawn
      from ``fold_in(key(seed), i)``: paired across methods and batch
      sizes); a ``Task`` batch (all its tasks are used, ``num_tasks`` is
      ignored); or a function ``(rng, n) -> Task`` such as
      ``partial(sinusoid.sample_tasks, support=10, query=10)`` (batch ``b``
      gets ``fold_in(key(seed), b)``, so keep ``batch_size`` fixed to pair).
    num_tasks: number of test tasks ``n``.
    seed: the test-task stream.
    steps: inner steps at test time (``None``: the learner's default).
    batch_size: tasks per compiled call (the last batch is padded).
    task_map, chunk_size: how tasks are mapped, see :mod:`metajax.core.task_map`
      (``'map'`` = ``lax.map``, memory of one task at a time).
    metric: headline metric; default ``'accuracy'`` if reported, else
      ``'loss'`` (MSE for regression learners).
    config: extra entries for ``EvalResult.config``.
    check: validate the first batch with ``learner.check``.
    model_state: the trained ``MetaState.model_state`` (running batch-norm
      statistics); evaluation then normalises with them
      (``learner.with_model_state``), as PyTorch's ``eval()``. ``None``:
      the learner's model as it is (batch statistics, if it has any).

  Returns:
    An :class:`EvalResult` (``.to_json()`` for a results file).

  Raises:
    ValueError: bad sizes, unknown metric, malformed tasks.
  """
  if num_tasks < 1:
    raise ValueError(f"num_tasks must be at least 1, got {num_tasks}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be at least 1, got {batch_size}")
  if isinstance(tasks, Task):
    check_tasks(tasks)
    num_tasks = tasks.num_tasks
  run = make_evaluator(learner, steps=steps, task_map=task_map,
                       chunk_size=chunk_size)
  size = min(batch_size, num_tasks)  # every call compiled for this many
  chunks: dict[str, list] = {}
  total = 0
  for i, batch in enumerate(_task_batches(tasks, num_tasks, seed, batch_size)):
    if check and i == 0:
      if hasattr(learner, "check"):
        learner.check(batch)
      else:
        check_tasks(batch)
    n = batch.num_tasks
    if n > size:
      raise ValueError(f"the task source returned {n} tasks, asked for {size}")
    out = jax.device_get(run(params, _pad(batch, size), model_state))
    for k, v in out.items():
      v = np.asarray(v, np.float64)[:n]
      chunks.setdefault(k, []).append(v.reshape(n, -1))
    total += n
  per_task = {k: np.concatenate(v) for k, v in chunks.items()}
  if metric is None:
    metric = "accuracy" if "accuracy" in per_task else "loss"
  if metric not in per_task:
    raise ValueError(f"metric {metric!r} not reported by the learner; it "
                     f"reports {sorted(per_task)}")
  mean, ci = stats.mean_ci95(per_task[metric][:, -1])
  curve_len = per_task[metric].shape[1]
  if steps is None and curve_len > 1:
    steps = curve_len - 1
  cfg = {"learner": type(learner).__name__, "seed": seed,
         "task_map": task_map, "batch_size": batch_size}
  if hasattr(tasks, "config"):
    cfg["sampler"] = tasks.config()
  cfg.update(config or {})
  return EvalResult(
      metric=metric, mean=float(mean), ci95=float(ci), num_tasks=total,
      steps=steps, curves={k: _summary(v) for k, v in per_task.items()},
      per_task=per_task, config=cfg)


def compare(a: EvalResult, b: EvalResult, metric: str | None = None) -> dict:
  """Paired difference ``a - b`` over the same test tasks (mean, ci95).

  Valid when both were evaluated on the same task stream (same seed, same
  sampler); the paired interval is usually much tighter than the two
  separate ones.
  """
  metric = metric or a.metric
  if a.num_tasks != b.num_tasks:
    raise ValueError(
        f"results cover {a.num_tasks} and {b.num_tasks} tasks; a paired "
        "comparison needs the same tasks")
  if a.config.get("seed") != b.config.get("seed"):
    raise ValueError(
        f"results use different task seeds ({a.config.get('seed')} vs "
        f"{b.config.get('seed')}); a paired comparison needs the same tasks")
  d = a.per_task[metric][:, -1] - b.per_task[metric][:, -1]
  mean, ci = stats.mean_ci95(d)
  return {"metric": metric, "mean_difference": float(mean),
          "ci95": float(ci), "num_tasks": int(d.shape[0])}
