"""MAML (Finn et al., 2017) with exact second-order meta-gradients.

For a task with support set S and query set Q, MAML adapts the
meta-parameters ``theta`` by ``K`` steps of gradient descent on the support
loss and scores the result on the query set:

    phi_0 = theta,  phi_{k+1} = phi_k - alpha * grad L_S(phi_k),
    meta-objective  = mean over tasks of L_Q(phi_K).

``jax.grad`` of this composition is the exact meta-gradient, Hessian terms
included. ``first_order=True`` replaces ``grad L_S`` by a constant
(``stop_gradient``), giving first-order MAML, so both are one flag apart.

The same class covers the variants that only change the inner loop:

* ANIL (Raghu et al., 2020): ``adapt_mask=lambda path: path.startswith('head')``;
* Meta-SGD (Li et al., 2017): ``learn_inner_lr='per_param'``;
* MAML++'s per-layer per-step rates (Antoniou et al., 2019):
  ``learn_inner_lr='per_step_per_tensor'``;
* a single learned rate: ``learn_inner_lr='scalar'``.

Meta-parameters are ``{'model': flax params}`` plus ``{'inner_lr': ...}``
when the inner rate is learned.

Defaults are MAML's sinusoid setting: 1 inner step, ``alpha = 0.01``, MSE.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.core import inner, losses
from metajax.core.learner import Learner
from metajax.core.tasks import Task

LEARN_LR = (None, "scalar", "per_param", "per_step_per_tensor")


@dataclasses.dataclass(frozen=True, eq=False)
class MAML(Learner):
  """Model-agnostic meta-learning over a flax model.

  Attributes:
    model: a flax module ``x -> outputs`` (used through ``apply``).
    loss: ``'mse'``, ``'cross_entropy'`` or ``(outputs, targets) -> scalar``.
    inner_steps: inner gradient steps at meta-training time.
    inner_lr: inner learning rate ``alpha`` (the initial value when learned).
    eval_inner_steps: inner steps for :meth:`evaluate` (default
      ``inner_steps``); meta-test may adapt longer than meta-train.
    first_order: first-order MAML (no second-order terms).
    adapt_mask: which model parameters adapt (predicate on the path inside
      the model params, e.g. ``'head/kernel'``, or a bool pytree); ``None``
      adapts all.
    learn_inner_lr: ``None`` (fixed), ``'scalar'``, ``'per_param'``
      (Meta-SGD) or ``'per_step_per_tensor'`` (MAML++ LSLR).
    unroll: inner loop unrolled in Python (``True``) or ``lax.scan``
      (``False`` or an unroll factor).
    remat: rematerialise inner steps in the backward pass (less memory).
    pre_metrics_on: ``'support'`` (MAML's convention: loss before adaptation
      on the support set, nearly free) or ``'query'`` (one more forward pass).
    ways: classes per task (classification), checked against ``model``'s
      outputs and the labels.
  """
  model: nn.Module
  loss: str | Callable = "mse"
  inner_steps: int = 1
  inner_lr: float = 0.01
  eval_inner_steps: int | None = None
  first_order: bool = False
  adapt_mask: Any = None
  learn_inner_lr: str | None = None
  unroll: bool | int = True
  remat: bool = False
  pre_metrics_on: str = "support"
  ways: int | None = None

  def __post_init__(self):
    if self.learn_inner_lr not in LEARN_LR:
      raise ValueError(
          f"learn_inner_lr must be one of {LEARN_LR}, got {self.learn_inner_lr!r}")
    if self.pre_metrics_on not in ("support", "query"):
      raise ValueError("pre_metrics_on must be 'support' or 'query'")
    if self.inner_steps < 0:
      raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")

  # -- properties --------------------------------------------------------
  @property
  def loss_fn(self) -> Callable:
    return losses.get(self.loss)

  @property
  def classification(self) -> bool:  # type: ignore[override]
    return self.loss == "cross_entropy" or self.loss is losses.cross_entropy

  @property
  def num_outputs(self):
    return getattr(self.model, "num_outputs", None)

  # -- Learner -----------------------------------------------------------
  def init(self, rng, task: Task):
    model_params = self.model.init(rng, task.support_x)["params"]
    params = {"model": model_params}
    lr = jnp.asarray(self.inner_lr, jnp.result_type(float))
    if self.learn_inner_lr == "scalar":
      params["inner_lr"] = lr
    elif self.learn_inner_lr == "per_param":
      params["inner_lr"] = jax.tree_util.tree_map(
          lambda p: jnp.full(p.shape, lr, p.dtype), model_params)
    elif self.learn_inner_lr == "per_step_per_tensor":
      params["inner_lr"] = jax.tree_util.tree_map(
          lambda p: jnp.full((self.inner_steps,), lr, p.dtype), model_params)
    return params

  def apply(self, model_params, x):
    """The model's outputs for inputs ``x`` under ``model_params``."""
    return self.model.apply({"params": model_params}, x)

  def support_loss(self, model_params, x, y):
    return self.loss_fn(self.apply(model_params, x), y)

  def adapt(self, params, support_x, support_y, *, steps=None,
            return_trajectory=False):
    """Adapted model parameters after ``steps`` (default ``inner_steps``)."""
    steps = self.inner_steps if steps is None else steps
    lr = params.get("inner_lr", self.inner_lr)
    return inner.adapt(
        lambda p: self.support_loss(p, support_x, support_y),
        params["model"], steps=steps, lr=lr, mask=self.adapt_mask,
        first_order=self.first_order,
        per_step_lr=self.learn_inner_lr == "per_step_per_tensor",
        unroll=self.unroll, remat=self.remat,
        return_trajectory=return_trajectory)

  def predict(self, params, state, x):
    del params
    return self.apply(state, x)

  def metrics(self, outputs, y, prefix=""):
    m = {prefix + "loss": self.loss_fn(outputs, y)}
    if self.classification:
      m[prefix + "accuracy"] = losses.accuracy(outputs, y)
    return m

  def task_loss(self, params, task: Task):
    adapted = self.adapt(params, task.support_x, task.support_y)
    metrics = self.metrics(self.apply(adapted, task.query_x), task.query_y)
    x, y = ((task.support_x, task.support_y) if self.pre_metrics_on == "support"
            else (task.query_x, task.query_y))
    pre = self.metrics(self.apply(jax.lax.stop_gradient(params["model"]), x),
                       y, prefix="pre_")
    metrics.update(jax.lax.stop_gradient(pre))
    return metrics["loss"], metrics

  def evaluate(self, params, task: Task, *, steps=None):
    """Query metrics after 0, 1, ..., ``steps`` inner steps.

    Returns a dict of arrays of length ``steps + 1`` (``loss`` and, for
    classification, ``accuracy``); ``steps`` defaults to ``eval_inner_steps``.
    """
    steps = (self.eval_inner_steps or self.inner_steps) if steps is None else steps
    curve = [self.metrics(self.apply(params["model"], task.query_x),
                          task.query_y)]
    if steps:
      _, traj = self.adapt(params, task.support_x, task.support_y, steps=steps,
                           return_trajectory=True)
      per_step = jax.lax.map(
          lambda p: self.metrics(self.apply(p, task.query_x), task.query_y),
          traj)
      return jax.tree_util.tree_map(
          lambda a, b: jnp.concatenate([a[None], b]), curve[0], per_step)
    return jax.tree_util.tree_map(lambda a: a[None], curve[0])
