"""Exact, first-order, implicit and Reptile meta-gradients side by side.

For one MAML-style learner, its meta-parameters and a batch of tasks,
:func:`compare_meta_gradients` computes the meta-gradient four ways and
compares each with a reference (the exact one by default), tensor by tensor
of the model's parameters:

============== ============================================================
direction      what it is
============== ============================================================
``exact``      MAML's meta-gradient with every second-order term
               (``jax.grad`` through the inner loop); ``MAML(first_order=
               False)``
``first_order`` the same with the inner gradients held constant (FOMAML,
               Finn et al. 2017 Sec. 5.2)
``implicit``   iMAML's (Rajeswaran et al. 2019): the inner problem
               regularised by ``lam/2 ||phi - theta||^2``, the meta-gradient
               ``(I + H/lam)^{-1} grad L_Q(phi)`` by ``cg_steps`` of
               conjugate gradient
``reptile``    Reptile's pseudo-gradient ``theta - phi`` after the same
               number of plain SGD steps on the support set (Nichol et al.
               2018), divided by ``inner_lr * inner_steps`` so that it is in
               gradient units (the mean support gradient along the
               trajectory); it never looks at the query set
============== ============================================================

Per tensor and over all parameters: the cosine similarity with the
reference, the relative norm difference ``||g - g_ref|| / ||g_ref||``, and
each direction's norm; per direction: the wall time of the compiled
meta-gradient (median of ``repeats`` calls after compilation) and XLA's peak
memory for it (``compiled.memory_analysis().peak_memory_in_bytes``: the
buffer assignment's peak, the same number on every run and backend, rather
than a noisy process RSS). With zero inner steps ``exact`` and
``first_order`` coincide.

Over a training run, :func:`track` recomputes the comparison every ``every``
meta-steps on a fixed probe batch and hands each row to a callback (e.g. a
:class:`metajax.experiment.metrics_log.MetricsLog`), so a user sees where
first order drifts from exact.

References:
  Finn, Abbeel & Levine 2017, "Model-Agnostic Meta-Learning"
  (arXiv:1703.03400); Nichol, Achiam & Schulman 2018, "On First-Order
  Meta-Learning Algorithms" (arXiv:1803.02999); Rajeswaran, Finn, Kakade &
  Levine 2019, "Meta-Learning with Implicit Gradients" (arXiv:1909.04630).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metajax.algorithms.imaml import IMAML
from metajax.algorithms.maml import MAML
from metajax.algorithms.reptile import Reptile
from metajax.core.learner import Learner
from metajax.core.tasks import Task

DIRECTIONS = ("exact", "first_order", "implicit", "reptile")
#: the key of the whole-parameter row in :class:`Comparison`'s tables.
ALL = "all"


def _paths(tree) -> list[str]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return ["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p)
          for p, _ in flat]


def direction_learners(learner: MAML, directions: Sequence[str] = DIRECTIONS,
                       *, lam: float = 1.0, cg_steps: int = 5
                       ) -> tuple[dict[str, Learner], dict[str, str]]:
  """``(learners, skipped)``: the learner computing each direction from
  ``learner``'s model, loss, inner steps and rate, and why any direction
  cannot be computed for it (by name). The same arguments give the same
  learner objects, so their compiled meta-gradients are reused."""
  args = (learner, tuple(directions), lam, cg_steps)
  try:
    return _direction_learners(*args)
  except TypeError:  # an unhashable learner: build afresh
    return _direction_learners.__wrapped__(*args)


@functools.lru_cache(maxsize=32)
def _direction_learners(learner, directions, lam, cg_steps):
  if not isinstance(learner, MAML):
    raise ValueError(
        "meta-gradient directions are defined for MAML-style learners "
        f"(metajax.MAML and its ANIL / Meta-SGD variants), not "
        f"{type(learner).__name__}")
  unknown = [d for d in directions if d not in DIRECTIONS]
  if unknown:
    raise ValueError(f"unknown directions {unknown}; choose from {DIRECTIONS}")
  common = dict(model=learner.model, loss=learner.loss,
                inner_steps=learner.inner_steps, inner_lr=learner.inner_lr,
                ways=learner.ways)
  out, skipped = {}, {}
  for d in directions:
    if d in ("exact", "first_order"):
      out[d] = dataclasses.replace(learner, first_order=d == "first_order")
    elif learner.learn_inner_lr is not None:
      skipped[d] = "needs a fixed inner rate (this learner learns its rates)"
    elif d == "implicit":
      if learner.adapt_mask is not None:
        skipped[d] = "iMAML adapts every parameter (this learner masks some)"
      else:
        out[d] = IMAML(**common, lam=lam, cg_steps=cg_steps)
    else:  # reptile
      out[d] = Reptile(**common, inner_optimizer="sgd", inner_batch_size=None,
                       adapt_mask=learner.adapt_mask)
  return out, skipped


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Meta-gradient directions compared with ``reference``.

  ``cosine[d][t]``, ``relative_difference[d][t]`` and ``norm[d][t]`` for
  direction ``d`` and tensor ``t`` (a parameter path, or :data:`ALL`);
  ``seconds[d]`` and ``peak_bytes[d]`` per direction; ``skipped`` names the
  directions that do not apply to the learner and why.
  """
  reference: str
  directions: tuple[str, ...]
  tensors: tuple[str, ...]
  cosine: dict
  relative_difference: dict
  norm: dict
  seconds: dict
  peak_bytes: dict
  skipped: dict

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def flat(self) -> dict[str, float]:
    """One number per (direction, quantity, tensor), keyed
    ``'<direction>/<quantity>/<tensor>'``: a metrics-log row. Quantities
    that are undefined (the cosine and relative difference of a tensor whose
    gradient is zero, such as a convolution bias before batch norm) are left
    out."""
    row = {}
    for d in self.directions:
      for q in ("cosine", "relative_difference", "norm"):
        for t, v in getattr(self, q)[d].items():
          if math.isfinite(v):
            row[f"{d}/{q}/{t}"] = v
      row[f"{d}/seconds"] = self.seconds[d]
      if self.peak_bytes[d] is not None:
        row[f"{d}/peak_bytes"] = self.peak_bytes[d]
    return row

  def table(self) -> str:
    """A markdown table: one row per direction and tensor."""
    lines = [f"reference: {self.reference}", "",
             "| direction | tensor | cosine | rel. difference | norm |",
             "|---|---|---|---|---|"]
    for d in self.directions:
      for t in (ALL,) + self.tensors:
        lines.append(
            f"| {d} | {t} | {self.cosine[d][t]:.4f} | "
            f"{self.relative_difference[d][t]:.4f} | {self.norm[d][t]:.4g} |")
    lines += ["", "| direction | ms per meta-gradient | peak memory (MiB) |",
              "|---|---|---|"]
    for d in self.directions:
      peak = self.peak_bytes[d]
      lines.append(f"| {d} | {1e3 * self.seconds[d]:.1f} | "
                   f"{'-' if peak is None else f'{peak / 2**20:.3f}'} |")
    for d, why in self.skipped.items():
      lines.append(f"\n{d}: skipped, {why}")
    return "\n".join(lines)


@functools.lru_cache(maxsize=32)
def _compiled_meta_grad(learner, task_map, chunk_size, signature):
  """The compiled model meta-gradient of ``learner`` for arguments of
  ``signature`` (their tree structure, shapes and dtypes), and XLA's peak
  memory for it: compiled once per learner and shapes, so :func:`track`
  compiles each direction once for a whole run."""
  treedef, shapes = signature

  def grad_fn(p, t):
    _, g = learner.meta_grad(p, t, task_map=task_map, chunk_size=chunk_size)
    return g["model"]

  params, tasks = jax.tree_util.tree_unflatten(
      treedef, [jax.ShapeDtypeStruct(s, d) for s, d in shapes])
  compiled = jax.jit(grad_fn).lower(params, tasks).compile()
  try:
    peak = int(compiled.memory_analysis().peak_memory_in_bytes)
  except (AttributeError, NotImplementedError, TypeError):
    peak = None  # a backend without buffer-assignment statistics
  return compiled, peak


def _timed_meta_grad(learner, params, tasks, *, task_map, chunk_size,
                     repeats):
  """``(model gradient, median seconds, peak bytes or None)``."""
  leaves, treedef = jax.tree_util.tree_flatten((params, tasks))
  signature = (treedef, tuple((np.shape(a), jnp.result_type(a))
                              for a in leaves))
  args = (learner, task_map, chunk_size, signature)
  try:
    compiled, peak = _compiled_meta_grad(*args)
  except TypeError:  # an unhashable learner: compile afresh
    compiled, peak = _compiled_meta_grad.__wrapped__(*args)
  grads = jax.block_until_ready(compiled(params, tasks))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(params, tasks))
    times.append(time.perf_counter() - t0)
  return grads, (statistics.median(times) if times else math.nan), peak


def _compare(g, ref) -> tuple[float, float, float]:
  """``(cosine, relative difference, norm of g)`` of two flat vectors."""
  g, ref = np.asarray(g, np.float64), np.asarray(ref, np.float64)
  ng, nr = float(np.linalg.norm(g)), float(np.linalg.norm(ref))
  cos = float(g @ ref / (ng * nr)) if ng > 0 and nr > 0 else math.nan
  rel = float(np.linalg.norm(g - ref) / nr) if nr > 0 else math.nan
  return cos, rel, ng


def compare_meta_gradients(learner: MAML, params, tasks: Task, *,
                           directions: Sequence[str] = DIRECTIONS,
                           reference: str = "exact", lam: float = 1.0,
                           cg_steps: int = 5, task_map: str = "vmap",
                           chunk_size: int | None = None,
                           repeats: int = 3) -> Comparison:
  """Compares meta-gradient directions of ``learner`` at ``params``.

  Args:
    learner: a :class:`~metajax.MAML` (any variant); its model, loss, inner
      steps and rate define every direction.
    params: its meta-parameters (``{'model': ...}`` plus learned rates).
    tasks: a task batch (leading task axis).
    directions: which of :data:`DIRECTIONS` to compute.
    reference: the direction the others are compared with.
    lam, cg_steps: iMAML's regulariser and conjugate-gradient steps.
    task_map, chunk_size: how tasks are mapped (see
      :func:`metajax.make_meta_step`).
    repeats: timed calls per direction after compilation (0: no timing).

  Returns:
    A :class:`Comparison` (``.table()`` prints it).
  """
  if reference not in directions:
    raise ValueError(f"reference {reference!r} is not among the directions "
                     f"{tuple(directions)}")
  learner.check(tasks)
  learners, skipped = direction_learners(learner, directions, lam=lam,
                                         cg_steps=cg_steps)
  if reference in skipped:
    raise ValueError(f"the reference {reference!r} cannot be computed for "
                     f"this learner: {skipped[reference]}")
  model_params = {"model": params["model"]}
  grads, seconds, peaks = {}, {}, {}
  for d, lrn in learners.items():
    p = params if d in ("exact", "first_order") else model_params
    g, seconds[d], peaks[d] = _timed_meta_grad(
        lrn, p, tasks, task_map=task_map, chunk_size=chunk_size,
        repeats=repeats)
    if d == "reptile" and learner.inner_steps:
      g = jax.tree_util.tree_map(
          lambda a: a / (learner.inner_lr * learner.inner_steps), g)
    grads[d] = g
  tensors = tuple(_paths(grads[reference]))
  ref_leaves = jax.tree_util.tree_leaves(grads[reference])
  ref_all = np.concatenate([np.ravel(a) for a in ref_leaves])
  cosine, rel, norm = {}, {}, {}
  for d in learners:
    leaves = jax.tree_util.tree_leaves(grads[d])
    cosine[d], rel[d], norm[d] = {}, {}, {}
    pairs = [(ALL, np.concatenate([np.ravel(a) for a in leaves]), ref_all)]
    pairs += [(t, np.ravel(a), np.ravel(r))
              for t, a, r in zip(tensors, leaves, ref_leaves)]
    for t, a, r in pairs:
      cosine[d][t], rel[d][t], norm[d][t] = _compare(a, r)
  return Comparison(reference=reference, directions=tuple(learners),
                    tensors=tensors, cosine=cosine, relative_difference=rel,
                    norm=norm, seconds=seconds, peak_bytes=peaks,
                    skipped=skipped)


def track(learner: MAML, optimizer, sample_tasks: Callable, probe: Task, *,
          num_steps: int, every: int,
          on_comparison: Callable[[int, Comparison], Any] | None = None,
          **fit_kwargs) -> tuple[Any, list[tuple[int, Comparison]]]:
  """Meta-trains ``learner`` with :func:`metajax.fit` and compares the
  directions on the fixed task batch ``probe`` at step 0 and every
  ``every`` meta-steps (and at the end).

  Training runs in rounds of ``every`` steps through one compiled step, so
  the run is the one ``fit`` would make in one go. ``on_comparison(step,
  comparison)`` is called after each comparison (e.g. writing
  ``comparison.flat()`` to a metrics log); ``fit_kwargs`` go to ``fit``
  (``seed``, ``task_map``, ...; ``compare_kwargs`` to
  :func:`compare_meta_gradients`).

  Returns:
    ``(final state, [(step, comparison), ...])``.
  """
  from metajax.training import fit  # the training loop imports evaluation

  if every < 1:
    raise ValueError(f"every must be >= 1, got {every}")
  compare_kwargs = dict(fit_kwargs.pop("compare_kwargs", {}))
  fit_kwargs.setdefault("progress", False)
  state, rows, done = None, [], 0
  while True:
    if state is None:
      state, _ = fit(learner, optimizer, sample_tasks, num_steps=0,
                     **fit_kwargs)
    comparison = compare_meta_gradients(learner, state.params, probe,
                                        **compare_kwargs)
    rows.append((done, comparison))
    if on_comparison is not None:
      on_comparison(done, comparison)
    if done >= num_steps:
      return state, rows
    done = min(num_steps, done + every)
    state, _ = fit(learner, optimizer, sample_tasks, num_steps=done,
                   state=state, **fit_kwargs)
