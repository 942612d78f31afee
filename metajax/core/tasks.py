"""Task batches: support and query sets with a leading task axis.

A :class:`Task` holds one task (``support_x``: ``(S, *x_shape)``,
``support_y``: ``(S, *y_shape)``, ``query_x``: ``(Q, *x_shape)``,
``query_y``: ``(Q, *y_shape)``) or, with an extra leading axis ``T``, a batch
of ``T`` tasks. It is a pytree (a ``NamedTuple``), so it passes through
``jit``, ``vmap`` and ``lax.map`` unchanged.

:func:`check_tasks` is the boundary check every learner runs on the host
before compiling: it turns bad shapes and dtypes into a ``ValueError`` that
names the problem instead of an XLA trace or a silently broadcast loss.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np


class Task(NamedTuple):
  """Support and query sets of one task, or of a batch of tasks.

  Attributes:
    support_x: ``([T,] S, *x_shape)`` support inputs.
    support_y: ``([T,] S, *y_shape)`` support targets (integer class ids in
      ``[0, ways)`` for classification, floats for regression).
    query_x: ``([T,] Q, *x_shape)`` query inputs.
    query_y: ``([T,] Q, *y_shape)`` query targets.
  """
  support_x: Any
  support_y: Any
  query_x: Any
  query_y: Any

  @property
  def num_tasks(self) -> int:
    return int(np.shape(self.support_x)[0])


def _shape(a) -> tuple[int, ...]:
  return tuple(np.shape(a))


def check_tasks(tasks: Task, *, batched: bool = True,
                classification: bool | None = None,
                ways: int | None = None,
                num_outputs: int | None = None) -> Task:
  """Validates a task batch and returns it unchanged.

  Args:
    tasks: a :class:`Task`, with a leading task axis when ``batched``.
    batched: whether the arrays carry a leading task axis ``T``.
    classification: ``True`` requires integer labels, ``False`` float
      targets; ``None`` infers it from ``support_y``'s dtype.
    ways: for classification, the number of classes per task; labels must lie
      in ``[0, ways)``. Checked on concrete (non-traced) labels only.
    num_outputs: the model's number of outputs (classes); ``ways`` larger than
      it is an error.

  Raises:
    ValueError: naming the first problem found.
  """
  if not isinstance(tasks, Task):
    raise ValueError(f"expected a metajax.Task, got {type(tasks).__name__}")
  sx, sy, qx, qy = (_shape(a) for a in tasks)
  lead = 1 if batched else 0
  for name, s in (("support_x", sx), ("support_y", sy), ("query_x", qx),
                  ("query_y", qy)):
    if len(s) < lead + 1:
      raise ValueError(
          f"{name} has shape {s}; expected "
          f"{'(tasks, examples, ...)' if batched else '(examples, ...)'}")
  if batched:
    t = {sx[0], sy[0], qx[0], qy[0]}
    if len(t) != 1:
      raise ValueError(
          "task axis differs between arrays: support_x/support_y/query_x/"
          f"query_y have {sx[0]}/{sy[0]}/{qx[0]}/{qy[0]} tasks")
    if sx[0] == 0:
      raise ValueError("the task batch is empty (0 tasks)")
  if sx[lead] == 0:
    raise ValueError("empty support set: support_x has 0 examples per task")
  if qx[lead] == 0:
    raise ValueError("empty query set: query_x has 0 examples per task")
  if sx[lead] != sy[lead]:
    raise ValueError(
        f"support set size mismatch: support_x has {sx[lead]} examples, "
        f"support_y has {sy[lead]}")
  if qx[lead] != qy[lead]:
    raise ValueError(
        f"query set size mismatch: query_x has {qx[lead]} examples, "
        f"query_y has {qy[lead]}")
  if sx[lead + 1:] != qx[lead + 1:]:
    raise ValueError(
        f"support and query inputs differ in shape: {sx[lead + 1:]} vs "
        f"{qx[lead + 1:]}")
  if sy[lead + 1:] != qy[lead + 1:]:
    raise ValueError(
        f"support and query targets differ in shape: {sy[lead + 1:]} vs "
        f"{qy[lead + 1:]}")
  ydt = np.dtype(tasks.support_y.dtype)
  if np.dtype(tasks.query_y.dtype).kind != ydt.kind:
    raise ValueError(
        f"support_y is {ydt} but query_y is {np.dtype(tasks.query_y.dtype)}")
  is_int = ydt.kind in "iu"
  if classification is None:
    classification = is_int
  if classification:
    if not is_int:
      raise ValueError(
          f"classification labels must be integers, got {ydt}; pass class ids "
          "in [0, ways), not one-hot or float labels")
    if len(sy) != lead + 1:
      raise ValueError(
          f"classification labels must have shape "
          f"{'(tasks, examples)' if batched else '(examples,)'}, got {sy}")
  elif is_int or ydt.kind == "b":
    raise ValueError(
        f"regression targets must be floating point, got {ydt}")
  if classification and ways is not None:
    if num_outputs is not None and ways > num_outputs:
      raise ValueError(
          f"ways={ways} is larger than the model's {num_outputs} outputs")
    for name, y in (("support_y", tasks.support_y),
                    ("query_y", tasks.query_y)):
      if not isinstance(y, np.ndarray):
        continue  # device arrays: checking values would sync every step
      if y.size and (y.min() < 0 or y.max() >= ways):
        raise ValueError(
            f"{name} holds labels in [{y.min()}, {y.max()}], outside "
            f"[0, {ways}) for a {ways}-way task")
  return tasks


def check_ways(ways: int, num_classes: int, what: str = "the dataset") -> None:
  """Raises ``ValueError`` unless ``1 <= ways <= num_classes``."""
  if ways < 1:
    raise ValueError(f"ways must be at least 1, got {ways}")
  if ways > num_classes:
    raise ValueError(
        f"ways={ways} is larger than the {num_classes} classes of {what}")


def task_slice(tasks: Task, i) -> Task:
  """The ``i``-th task (or a slice of tasks) of a batch."""
  return jax.tree_util.tree_map(lambda a: a[i], tasks)
