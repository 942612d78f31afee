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
approximation). ``cg_damping`` adds ``damping * v`` to the operator (the
authors' code uses a damped operator ``(1 + damping) v + H v / (lam +
lam_damping)``; the default 0 is the paper's equation).

Paper defaults (Sec. 5.2, Table 2; the values and their sources are in
:mod:`metajax.configs.imaml`): ``lam = 2.0``, 5 CG steps, 16 (5-way) or 25
(20-way) inner GD steps on Omniglot, Adam outer optimiser; mini-ImageNet:
``lam = 0.5``, 10 steps. The inner step size, not stated in the paper, is 0.1
as in the hypertorch iMAML reproduction (Grazzi et al. 2020).
"""
from __future__ import annotations

import dataclasses
import functools
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
    inner_steps: gradient steps on the proximal objective ``G``.
    eval_inner_steps: inner steps for :meth:`evaluate` (default
      ``inner_steps``).
    inner_lr: their step size (unused with ``inner_optimizer``).
    lam: proximal strength ``lambda`` (> 0).
    cg_steps: conjugate-gradient iterations of the backward solve (0: the
      first-order approximation).
    cg_damping: extra ``damping * v`` in the CG operator.
    hvp: ``'reverse'`` (any model) or ``'forward'`` (faster; not through
      custom-VJP layers such as :func:`metajax.models.ops.conv2d`).
    inner_optimizer: optional optax optimiser for the inner solve instead
      of gradient descent.
  """
  inner_steps: int = 16
  inner_lr: float = 0.1
  eval_inner_steps: int | None = None
  unroll: bool | int = False  # the solve is never differentiated: scan it
  lam: float = 2.0
  cg_steps: int = 5
  cg_damping: float = 0.0
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
    if self.cg_damping < 0:
      raise ValueError(f"cg_damping must be >= 0, got {self.cg_damping}")
    if (self.inner_optimizer is not None and
        not isinstance(self.inner_optimizer, optax.GradientTransformation)):
      raise ValueError(
          "inner_optimizer must be None or an optax.GradientTransformation")

  # -- the inner problem -------------------------------------------------
  def proximal_loss(self, model_params, theta, x, y):
    """``G(phi, theta) = L_S(phi) + lam/2 ||phi - theta||^2`` (scalar)."""
    sq = sum(jnp.sum(jnp.square(p - t)) for p, t in zip(
        jax.tree_util.tree_leaves(model_params),
        jax.tree_util.tree_leaves(theta)))
    return self.support_loss(model_params, x, y) + 0.5 * self.lam * sq

  def solve(self, theta, x, y, *, steps=None, return_trajectory=False):
    """Approximate ``phi*(theta)``: ``steps`` descent steps on ``G`` from
    ``theta`` (not differentiable; use :meth:`adapt` for gradients)."""
    steps = self.inner_steps if steps is None else steps
    theta = jax.lax.stop_gradient(theta)
    step = (inner.sgd(self.inner_lr) if self.inner_optimizer is None
            else self.inner_optimizer)
    # grad G = grad L_S + lam (phi - theta): the proximal rule adds the
    # second term, so any inner optimiser descends on G.
    return inner.adapt(
        lambda p: self.support_loss(p, x, y), theta, steps=steps,
        update=optax.chain(inner.proximal(theta, self.lam), step),
        unroll=self.unroll, return_trajectory=return_trajectory)

  def implicit_vjp(self, phi, x, y, g):
    """``(I + H/lam)^{-1} g`` by CG, ``H`` the support-loss Hessian at
    ``phi`` (``g`` and the result are pytrees like ``phi``)."""
    if self.cg_steps == 0:
      return g
    grad_fn = jax.grad(lambda p: self.support_loss(p, x, y))

    def hvp(v):
      if self.hvp == "forward":
        return jax.jvp(grad_fn, (phi,), (v,))[1]
      # Layers with a custom VJP (metajax's conv) have no forward mode;
      # reverse-over-reverse gives the same product for every model.
      return jax.grad(lambda p: _vdot(grad_fn(p), v))(phi)

    def matvec(v):
      hv = hvp(v)
      return jax.tree_util.tree_map(
          lambda a, b: (1.0 + self.cg_damping) * a + b / self.lam, v, hv)

    return conjugate_gradient(matvec, g, self.cg_steps)

  # -- Learner -----------------------------------------------------------
  @property
  def default_eval_steps(self) -> int:
    return self.eval_inner_steps or self.inner_steps

  def adapt(self, params, support_x, support_y, *, steps=None,
            return_trajectory=False):
    """``phi*`` for one task, differentiable in ``params['model']`` through
    the implicit gradient. With ``return_trajectory`` (evaluation curves) the
    iterates are returned without a gradient path."""
    steps = self.inner_steps if steps is None else steps
    if steps < 0:
      raise ValueError(f"inner steps must be >= 0, got {steps}")
    theta = params["model"]
    if return_trajectory:
      return self.solve(theta, support_x, support_y, steps=steps,
                        return_trajectory=True)
    return _implicit_solve(self, steps, theta, support_x, support_y)
