"""Rematerialisation of the inner loop: memory that does not grow with steps.

Exact second-order MAML differentiates through every inner step, so by
default the backward pass keeps every step's activations: memory grows
linearly with the number of inner steps. ``jax.checkpoint`` trades that
memory for recomputation. The inner loop (:func:`metajax.core.inner.adapt`)
is cut into *segments* of consecutive steps, and each segment is wrapped in
``jax.checkpoint``. The backward pass keeps only the parameters (and update
rule state) at segment boundaries and recomputes one segment at a time:

* ``Remat(every=1)`` (``remat=True`` or ``'step'``): every step is a
  segment. It keeps one parameter copy per step, and only one step's
  activations at a time.
* ``Remat(every=k)`` (``'every:k'``): ``K / k`` boundaries kept, and ``k``
  steps of activations while a segment is recomputed.
* ``Remat(every='sqrt')`` (``'sqrt'``): ``k = ceil(sqrt(K))``, the classic
  ``O(sqrt(K))`` checkpointing schedule (Chen et al. 2016; Griewank and
  Walther 2000).
* ``policy``: what a segment may keep instead of recomputing it.
  ``'conv'`` keeps the convolution outputs (named by
  :func:`metajax.models.ops.conv2d`), so only the cheap element-wise ops are
  recomputed. ``'dots'`` is ``jax.checkpoint_policies.dots_saveable``
  (matmul outputs, for MLPs). ``None`` keeps nothing.

Every schedule computes the same numbers as no rematerialisation (tested in
float64). Measured peak memory and time per meta-step against inner steps
are in ``benchmarks/remat_memory.py`` and its JSON.

References:
  Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"
  (arXiv:1604.06174); Griewank and Walther 2000, "Algorithm 799: revolve"
  (ACM TOMS 26(1)); the JAX authors, "Gradient checkpointing with
  jax.checkpoint", https://docs.jax.dev/.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax

#: the name :func:`metajax.models.ops.conv2d` gives its outputs.
CONV_NAME = "conv_out"

POLICIES = (None, "conv", "dots")


@dataclasses.dataclass(frozen=True)
class Remat:
  """A rematerialisation schedule for the inner loop.

  Attributes:
    every: steps per checkpointed segment (an ``int >= 1``), or ``'sqrt'``
      for ``ceil(sqrt(steps))``.
    policy: what a segment keeps for its backward pass (see the module
      docstring): ``None``, ``'conv'`` or ``'dots'``.
  """
  every: int | str = 1
  policy: str | None = None

  def __post_init__(self):
    if self.every != "sqrt" and (isinstance(self.every, bool) or
                                 not isinstance(self.every, int) or
                                 self.every < 1):
      raise ValueError(f"Remat(every=...) must be an integer >= 1 or 'sqrt', "
                       f"got {self.every!r}")
    if self.policy not in POLICIES:
      raise ValueError(f"Remat(policy=...) must be one of {POLICIES}, got "
                       f"{self.policy!r}")

  def segment_length(self, steps: int) -> int:
    """Steps per segment for an inner loop of ``steps`` steps."""
    if self.every == "sqrt":
      return max(1, math.ceil(math.sqrt(steps)))
    return self.every

  def checkpoint(self, fn: Callable) -> Callable:
    """``fn`` wrapped in ``jax.checkpoint`` with this schedule's policy."""
    policy = None
    if self.policy == "conv":
      policy = jax.checkpoint_policies.save_only_these_names(CONV_NAME)
    elif self.policy == "dots":
      policy = jax.checkpoint_policies.dots_saveable
    return jax.checkpoint(fn, policy=policy)


def resolve(remat: Any) -> Remat | None:
  """The schedule a ``remat=`` option names, or ``None`` for none.

  Accepts ``False``/``None``/``'none'`` (none), ``True``/``'step'`` (every
  step), ``'sqrt'``, ``'every:k'``, ``'conv'`` (every step, convolution
  outputs kept), or a :class:`Remat`.

  Raises:
    ValueError: naming a value it does not understand.
  """
  if isinstance(remat, Remat):
    return remat
  if remat is None or remat is False or remat == "none":
    return None
  if remat is True or remat == "step":
    return Remat(1)
  if remat == "sqrt":
    return Remat("sqrt")
  if remat == "conv":
    return Remat(1, policy="conv")
  if isinstance(remat, str) and remat.startswith("every:"):
    try:
      return Remat(int(remat[len("every:"):]))
    except ValueError:
      pass
  raise ValueError(
      f"unknown remat {remat!r}; use False, True, 'step', 'sqrt', 'every:K', "
      "'conv' or metajax.core.remat.Remat(every=..., policy=...)")


def segments(steps: int, length: int) -> list[tuple[int, int]]:
  """``(first step, number of steps)`` of each segment of ``steps`` steps
  cut into ``length``-step segments (the last one may be shorter)."""
  return [(s, min(length, steps - s)) for s in range(0, steps, length)]
