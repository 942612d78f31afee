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
from typing import Any

import jax
import jax.numpy as jnp
import optax

from metajax.algorithms.model_learner import ModelLearner
from metajax.core import inner
from metajax.core import remat as remat_lib
from metajax.core.tasks import Task

LEARN_LR = (None, "scalar", "per_param", "per_step_per_tensor")


@dataclasses.dataclass(frozen=True, eq=False)
class MAML(ModelLearner):
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
    remat: rematerialise inner steps in the backward pass (less memory, same
      numbers): ``False``, ``True`` (every step), ``'sqrt'``,
      ``'every:k'``, ``'conv'`` or a :class:`metajax.core.remat.Remat`.
    pre_metrics_on, ways: see :class:`~metajax.algorithms.model_learner.ModelLearner`
      (keyword-only).
  """
  inner_steps: int = 1
  inner_lr: float = 0.01
  eval_inner_steps: int | None = None
  first_order: bool = False
  adapt_mask: Any = None
  learn_inner_lr: str | None = None
  unroll: bool | int = True
  remat: Any = False

  def __post_init__(self):
    remat_lib.resolve(self.remat)  # a bad schedule is named here
    super().__post_init__()
    if self.learn_inner_lr not in LEARN_LR:
      raise ValueError(
          f"learn_inner_lr must be one of {LEARN_LR}, got {self.learn_inner_lr!r}")
    if self.inner_steps < 0:
      raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")

  @property
  def default_eval_steps(self) -> int:
    return self.eval_inner_steps or self.inner_steps

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

  def update_rule(self, params, *, first_order=None) -> inner.UpdateRule:
    """The inner step: ``sgd`` on the (possibly learned) rate, or per-step
    rates for ``'per_step_per_tensor'``, after ``first_order`` if set
    (``first_order`` overrides the field; it may be a traced bool)."""
    lr = params.get("inner_lr", self.inner_lr)
    step = (inner.per_step_sgd(lr)
            if self.learn_inner_lr == "per_step_per_tensor" else inner.sgd(lr))
    fo = self.first_order if first_order is None else first_order
    return step if fo is False else optax.chain(inner.first_order(fo), step)

  def adapt(self, params, support_x, support_y, *, steps=None,
            return_trajectory=False):
    """Adapted model parameters after ``steps`` (default ``inner_steps``)."""
    steps = self.inner_steps if steps is None else steps
    if self.learn_inner_lr == "per_step_per_tensor":
      inner.check_per_step_rates(params["inner_lr"], steps)
    return inner.adapt(
        lambda p: self.support_loss(p, support_x, support_y),
        params["model"], steps=steps, update=self.update_rule(params),
        mask=self.adapt_mask, unroll=self.unroll, remat=self.remat,
        return_trajectory=return_trajectory)

