"""iMAML (Rajeswaran, Finn, Kakade & Levine, 2019): implicit meta-gradients.

"Meta-Learning with Implicit Gradients", NeurIPS 2019, arXiv:1909.04630.
The inner problem is proximally regularised towards the meta-parameters,

    phi*(theta) = argmin_phi  G(phi, theta),
    G(phi, theta) = L_S(phi) + (lam / 2) ||phi - theta||^2,          (Eq. 4)

and solved approximately by ``inner_steps`` steps of gradient descent on
``G`` from ``phi_0 = theta`` (the paper's iMAML-GD). At the solution
``grad L_S(phi*) + lam (phi* - theta) = 0``, so by the implicit function
theorem

    d phi* / d theta = (I + H / lam)^{-1},   H = hess L_S(phi*),     (Lemma 1)

and the meta-gradient of the query loss is

    g_theta = (I + H / lam)^{-1} grad L_Q(phi*),                    (Eq. 7)

computed by ``cg_steps`` iterations of conjugate gradient on
``v -> v + H v / lam`` with Hessian-vector products (``hvp='reverse'``,
reverse-over-reverse, works for every model including layers with custom
VJPs such as metajax's conv; ``hvp='forward'``, forward-over-reverse, is
cheaper for models without them),
never forming ``H``. Both parts are wired into autodiff with
:func:`jax.custom_vjp`: the forward pass runs the inner loop without
recording it, the backward pass is the CG solve, so memory is independent of
``inner_steps`` and ``jax.grad`` of :meth:`IMAML.task_loss` *is* the
implicit meta-gradient (the generic :func:`metajax.make_meta_step` works
unchanged).

``cg_steps=0`` skips the solve (``g_theta = grad L_Q(phi*)``, the first-order
approximation; the official code's ``--cg_steps`` of 0 *or 1* does that).

The paper's equations and the released code
--------------------------------------------
The official code (https://github.com/aravindr93/imaml_dev, Omniglot only)
that produced the published Omniglot numbers does not run the loop above.
Both are offered; the defaults are the paper's equations, the released
code's behaviour is selected by options (and is what the Omniglot entries of
:mod:`metajax.configs.imaml` record):

* ``inner_loop='proximal'`` (default): ``inner_steps`` gradient steps on
  ``G`` (Eq. 4). ``inner_loop='code'``: ``examples/omniglot_implicit_maml.py``
  calls ``Learner.learn_task`` (``implicit_maml/learner_model.py``) with
  ``add_regularization=False``, i.e. ``inner_steps`` plain SGD steps at
  ``inner_lr`` on the support loss alone from ``theta`` to ``w``, then takes
  ONE SGD step at the same rate on ``lam/2 ||w - theta||^2`` ("pull back for
  regularization"): ``phi = w - inner_lr lam (w - theta) = theta + (1 -
  inner_lr lam)(w - theta)``, ``theta + 0.8 (w - theta)`` at ``inner_lr``
  0.1, ``lam`` 2. ``phi`` is then not a stationary point of ``G``; the
  meta-gradient is still the CG solve of Eq. 7 at this ``phi``, as in the
  code.
* ``lam_damping`` (default 0): the CG operator is
  ``(1 + cg_damping) v + H v / (lam + lam_damping)``, as the code's
  ``Learner.matrix_evaluator`` (``regu_coef`` = ``--cg_damping`` 1.0,
  ``lam_damping`` 10 by default there). With both 0 it is the paper's
  ``v + H v / lam``. ``cg_damping`` 1 roughly halves the meta-gradient,
  which Adam undoes up to its ``eps`` (1e-3 in the code's Adam, recorded in
  the settings' ``outer['adam_eps']``).
* ``eval_lam`` (default ``None``): test-time adaptation. ``None`` adapts at
  test time exactly as in training; ``0`` takes plain steps on the support
  loss with no proximal term and no pull-back, as the code's
  ``examples/measure_accuracy.py --lam 0.0 --n_steps 16`` (``learn_task``
  with ``add_regularization=False``); ``> 0`` takes steps on ``G`` with
  ``lam = eval_lam`` (``measure_accuracy.py --lam > 0``,
  ``add_regularization=True``). It applies to :meth:`IMAML.evaluate`'s
  curves and to ``adapt(..., evaluation=True)``.

Evaluation caveat (not reproduced here): ``measure_accuracy.py`` seeds its
1623-character shuffle with 12345 while task generation and training seed it
with 123: training draws from the first 1200 characters of the seed-123
order, the "test" tasks from the last 423 of the seed-12345 order, and 310 of
those 423 were meta-training characters. metajax tests on its own held-out
split and does not copy that.

Paper defaults (Sec. 5.2, Table 2; the values and their sources are in
:mod:`metajax.configs.imaml`): ``lam = 2.0``, 5 CG steps, 16 (5-way) or 25
(20-way) inner GD steps on Omniglot, Adam outer optimiser; mini-ImageNet:
``lam = 0.5``, 10 steps. The inner step size, not stated in the paper, is 0.1
as in the official command and the hypertorch iMAML reproduction (Grazzi et
al. 2020).
"""
from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax.algorithms.model_learner import ModelLearner
from metajax.core import inner


# -- pytree linear algebra -------------------------------------------------
def _vdot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                            jax.tree_util.tree_leaves(b)))


def _axpy(alpha, x, y):
  """``alpha * x + y`` on pytrees."""
  return jax.tree_util.tree_map(lambda u, v: alpha * u + v, x, y)


def conjugate_gradient(matvec: Callable[[Any], Any], b: Any,
                       steps: int) -> Any:
  """``steps`` iterations of CG for ``A x = b`` from ``x_0 = 0``.

  ``A`` (given as ``matvec``) must be symmetric positive definite; ``b`` and
  ``x`` are pytrees. A fixed number of iterations (a ``fori_loop``) keeps the
  cost static under ``jit``/``vmap``. Once the residual is exactly zero, or a
  search direction has non-positive curvature ``p^T A p <= 0`` (``A`` not
  positive definite, e.g. a support-loss Hessian with eigenvalues below
  ``-lam``), the remaining iterations keep the current iterate.
  """
  if steps < 0:
    raise ValueError(f"CG steps must be >= 0, got {steps}")
  x = jax.tree_util.tree_map(jnp.zeros_like, b)
  rs = _vdot(b, b)

  def body(_, carry):
    x, r, p, rs, active = carry
    ap = matvec(p)
    pap = _vdot(p, ap)
    # Stop (keep the current iterate) on a zero residual or on non-positive
    # curvature, where CG's step is undefined (truncated CG).
    active = active & (pap > 0) & (rs > 0)
    alpha = jnp.where(active, rs / jnp.where(active, pap, 1), 0)
    x = _axpy(alpha, p, x)
    r = _axpy(-alpha, ap, r)
    rs_new = _vdot(r, r)
    beta = jnp.where(active, rs_new / jnp.where(active, rs, 1), 0)
    p = jax.tree_util.tree_map(
        lambda new, old: jnp.where(active, new, old), _axpy(beta, p, r), p)
    return x, r, p, jnp.where(active, rs_new, rs), active

  x, *_ = jax.lax.fori_loop(0, steps, body, (x, b, b, rs, jnp.asarray(True)))
  return x


def _zero_cotangent(x):
  x = jnp.asarray(x) if not hasattr(x, "dtype") else x
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return jnp.zeros_like(x)
  return np.zeros(np.shape(x), dtype=jax.dtypes.float0)


# -- the implicit inner solve ---------------------------------------------
@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _implicit_solve(learner, steps, theta, x, y):
  return learner.solve(theta, x, y, steps=steps)


def _implicit_fwd(learner, steps, theta, x, y):
  phi = learner.solve(theta, x, y, steps=steps)
  return phi, (phi, x, y)


def _implicit_bwd(learner, steps, res, g):
  del steps
  phi, x, y = res
  v = learner.implicit_vjp(phi, x, y, g)
  return v, _zero_cotangent(x), _zero_cotangent(y)


_implicit_solve.defvjp(_implicit_fwd, _implicit_bwd)


INNER_LOOPS = ("proximal", "code")


@dataclasses.dataclass(frozen=True, eq=False)
class IMAML(ModelLearner):
  """Implicit MAML over a flax model (equations in the module docstring).

  Meta-parameters are ``{'model': flax params}``. :meth:`adapt` returns
  ``phi*`` with the implicit derivative attached, so ``task_loss`` (the
  query loss at ``phi*``) differentiates to Eq. 7 (reverse mode only:
  ``jax.grad``/``vjp``, not ``jvp``, as for any ``custom_vjp``).

  iMAML shares MAML's inner loop (:func:`metajax.core.inner.adapt`, here
  with the :func:`~metajax.core.inner.proximal` rule) and its model-and-loss
  base, not MAML itself: its meta-gradient does not depend on the inner path,
  so there is no derivative order, mask, remat or learned rate.

  Attributes (beyond ``model``, ``loss`` and the keyword-only
  ``pre_metrics_on``, ``ways`` of
  :class:`~metajax.algorithms.model_learner.ModelLearner`):
    inner_steps: inner steps (on ``G``, or on ``L_S`` with
      ``inner_loop='code'``).
    eval_inner_steps: inner steps for :meth:`evaluate` (default
      ``inner_steps``).
    inner_lr: their step size (unused with ``inner_optimizer``) and the
      pull-back's with ``inner_loop='code'``.
    lam: proximal strength ``lambda`` (> 0).
    inner_loop: ``'proximal'`` (default; the paper's Eq. 4: gradient descent
      on ``G``) or ``'code'`` (the official code: plain SGD on ``L_S``, then
      one SGD step on ``lam/2 ||w - theta||^2``, ``phi = theta + (1 -
      inner_lr lam)(w - theta)``; needs ``inner_lr * lam < 1`` and no
      ``inner_optimizer``).
    eval_lam: test-time adaptation (:meth:`evaluate`, ``adapt(...,
      evaluation=True)``): ``None`` (default) as in training; ``0.0``: plain
      steps on ``L_S`` (no proximal term, no pull-back; the official
      ``measure_accuracy.py --lam 0.0``); ``> 0``: steps on ``G`` with this
      ``lambda``.
    cg_steps: conjugate-gradient iterations of the backward solve (0: the
      first-order approximation).
    cg_damping: the CG operator is ``(1 + cg_damping) v + H v / (lam +
      lam_damping)``.
    lam_damping: see ``cg_damping`` (the official code uses 1.0 and 10;
      both 0, the default, is the paper's ``v + H v / lam``).
    hvp: ``'reverse'`` (any model) or ``'forward'`` (faster; not through
      custom-VJP layers such as :func:`metajax.models.ops.conv2d`).
    inner_optimizer: optional optax optimiser for the inner solve instead
      of gradient descent (``inner_loop='proximal'`` only).
  """
  inner_steps: int = 16
  inner_lr: float = 0.1
  eval_inner_steps: int | None = None
  unroll: bool | int = False  # the solve is never differentiated: scan it
  lam: float = 2.0
  inner_loop: str = "proximal"
  eval_lam: float | None = None
  cg_steps: int = 5
  cg_damping: float = 0.0
  lam_damping: float = 0.0
  hvp: str = "reverse"
  inner_optimizer: optax.GradientTransformation | None = None

  def __post_init__(self):
    super().__post_init__()
    if self.inner_steps < 0:
      raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")
    if not self.lam > 0:
      raise ValueError(f"iMAML needs lam > 0, got {self.lam}")
    if self.cg_steps < 0:
      raise ValueError(f"cg_steps must be >= 0, got {self.cg_steps}")
    if self.hvp not in ("reverse", "forward"):
      raise ValueError(f"hvp must be 'reverse' or 'forward', got {self.hvp!r}")
    if not self.cg_damping >= 0:
      raise ValueError(f"cg_damping must be >= 0, got {self.cg_damping}")
    if not self.lam_damping >= 0:
      raise ValueError(f"lam_damping must be >= 0, got {self.lam_damping}")
    if (self.inner_optimizer is not None and
        not isinstance(self.inner_optimizer, optax.GradientTransformation)):
      raise ValueError(
          "inner_optimizer must be None or an optax.GradientTransformation")
    if self.inner_loop not in INNER_LOOPS:
      raise ValueError(
          f"inner_loop must be one of {INNER_LOOPS}, got {self.inner_loop!r}")
    if self.eval_lam is not None and (
        isinstance(self.eval_lam, bool)
        or not isinstance(self.eval_lam, numbers.Real)
        or not self.eval_lam >= 0):
      raise ValueError(
          f"eval_lam must be None or a number >= 0, got {self.eval_lam!r}")
    if self.inner_loop == "code":
      if self.inner_optimizer is not None:
        raise ValueError(
            "inner_loop='code' takes plain SGD steps at inner_lr (the "
            "official code's torch SGD); inner_optimizer applies to "
            "inner_loop='proximal' only")
      if not self.inner_lr * self.lam < 1:
        raise ValueError(
            "inner_loop='code' needs inner_lr * lam < 1 (its pull-back keeps "
            f"1 - inner_lr * lam of the adaptation), got inner_lr="
            f"{self.inner_lr}, lam={self.lam}")

  # -- the inner problem -------------------------------------------------
  def proximal_loss(self, model_params, theta, x, y):
    """``G(phi, theta) = L_S(phi) + lam/2 ||phi - theta||^2`` (scalar)."""
    sq = sum(jnp.sum(jnp.square(p - t)) for p, t in zip(
        jax.tree_util.tree_leaves(model_params),
        jax.tree_util.tree_leaves(theta)))
    return self.support_loss(model_params, x, y) + 0.5 * self.lam * sq

  def inner_rule(self, *, evaluation: bool = False) -> tuple[str, float]:
    """``(kind, lam)`` of the inner loop in training or, with
    ``evaluation``, at test time: ``kind`` is ``'proximal'`` (steps on
    ``G`` with this ``lam``), ``'code'`` (steps on ``L_S`` then the
    pull-back with this ``lam``) or ``'plain'`` (steps on ``L_S`` only)."""
    if evaluation and self.eval_lam is not None:
      if self.eval_lam == 0:
        return "plain", 0.0
      return "proximal", self.eval_lam
    return self.inner_loop, self.lam

  def solve(self, theta, x, y, *, steps=None, return_trajectory=False,
            evaluation=False):
    """Approximate ``phi*(theta)`` from ``theta`` by the inner loop of
    :meth:`inner_rule` (not differentiable; use :meth:`adapt` for
    gradients). With ``return_trajectory`` also the iterates after each
    step; with ``inner_loop='code'`` each one is pulled back as the last
    (point ``t`` is what ``steps=t`` would return)."""
    steps = self.inner_steps if steps is None else steps
    theta = jax.lax.stop_gradient(theta)
    kind, lam = self.inner_rule(evaluation=evaluation)
    step = (inner.sgd(self.inner_lr) if self.inner_optimizer is None
            else self.inner_optimizer)
    # grad G = grad L_S + lam (phi - theta): the proximal rule adds the
    # second term, so any inner optimiser descends on G.
    update = (optax.chain(inner.proximal(theta, lam), step)
              if kind == "proximal" else step)
    out = inner.adapt(
        lambda p: self.support_loss(p, x, y), theta, steps=steps,
        update=update, unroll=self.unroll,
        return_trajectory=return_trajectory)
    if kind != "code":
      return out
    # The official code's pull-back: one SGD step on lam/2 ||w - theta||^2.
    rate = self.inner_lr * lam

    def pull_back(w):
      if w is None:
        return None
      return jax.tree_util.tree_map(lambda a, t: a - rate * (a - t), w,
                                    theta)

    if not return_trajectory:
      return pull_back(out)
    # ``theta`` broadcasts against the trajectory's leading step axis.
    return pull_back(out[0]), pull_back(out[1])

  def implicit_vjp(self, phi, x, y, g):
    """``A^{-1} g`` by CG, ``A v = (1 + cg_damping) v + H v / (lam +
    lam_damping)``, ``H`` the support-loss Hessian at ``phi`` (``g`` and the
    result are pytrees like ``phi``)."""
    if self.cg_steps == 0:
      return g
    grad_fn = jax.grad(lambda p: self.support_loss(p, x, y))

    def hvp(v):
      if self.hvp == "forward":
        return jax.jvp(grad_fn, (phi,), (v,))[1]
      # Layers with a custom VJP (metajax's conv) have no forward mode;
      # reverse-over-reverse gives the same product for every model.
      return jax.grad(lambda p: _vdot(grad_fn(p), v))(phi)

    scale = 1.0 + self.cg_damping
    lam = self.lam + self.lam_damping

    def matvec(v):
      hv = hvp(v)
      return jax.tree_util.tree_map(lambda a, b: scale * a + b / lam, v, hv)

    return conjugate_gradient(matvec, g, self.cg_steps)

  # -- Learner -----------------------------------------------------------
  @property
  def default_eval_steps(self) -> int:
    return (self.inner_steps if self.eval_inner_steps is None
            else self.eval_inner_steps)

  def adapt(self, params, support_x, support_y, *, steps=None,
            return_trajectory=False, evaluation=None):
    """Task weights for one task.

    Args:
      params: ``{'model': theta}``.
      support_x, support_y: the task's support set.
      steps: inner steps (default ``inner_steps``).
      return_trajectory: also return the weights after every step (for
        evaluation curves; no gradient path).
      evaluation: adapt as at test time (``eval_lam``), without a gradient
        path; default: as ``return_trajectory`` (curves are evaluation, a
        plain call is the training inner loop, differentiable in
        ``params['model']`` through the implicit gradient).
    """
    steps = self.inner_steps if steps is None else steps
    if steps < 0:
      raise ValueError(f"inner steps must be >= 0, got {steps}")
    evaluation = return_trajectory if evaluation is None else evaluation
    theta = params["model"]
    if return_trajectory or evaluation:
      return self.solve(theta, support_x, support_y, steps=steps,
                        return_trajectory=return_trajectory,
                        evaluation=evaluation)
    return _implicit_solve(self, steps, theta, support_x, support_y)
