"""Inner-loop adaptation: steps of gradient descent on a task's support loss.

:func:`adapt` is the one inner loop every optimisation-based learner shares.
It is a pure function of the parameters, so the outer ``jax.grad`` through it
gives MAML's exact second-order meta-gradient; ``first_order=True`` puts a
``stop_gradient`` on each inner gradient (first-order MAML).

The inner learning rate may be

* a scalar (MAML);
* a pytree shaped like the parameters, one rate (scalar or per-element
  array) per tensor (Meta-SGD);
* either of those with a leading axis of length ``steps`` and
  ``per_step_lr=True``: one rate per step per tensor (MAML++).

``mask`` picks which parameters adapt (the rest stay at their meta-learned
values and get no inner gradient); e.g. head-only adaptation for ANIL.

``step_loss=True`` makes the support loss depend on the step index ``t``
(``loss_fn(params, t)``): inner minibatches (Reptile) or per-step batch-norm
weights (MAML++). ``t`` is a Python ``int`` when unrolled and a traced
``int32`` scalar under ``lax.scan`` or ``remat``, so index with it (``a[t]``)
rather than branch on it.

Scanned or unrolled: ``unroll=True`` writes the steps out in Python (best
run time for conv nets on XLA CPU, longer compile), ``unroll=False`` uses
``lax.scan`` (compile time independent of ``steps``), an integer ``k > 1``
scans with ``k`` steps unrolled per iteration. ``remat=True`` wraps each step
in ``jax.checkpoint`` so the backward pass recomputes the inner forward pass
instead of storing it (same numbers, less memory).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax.core import masks as masks_lib

Params = Any
LossFn = Callable[[Params], jax.Array]


def _lr_leaves(lr, treedef, num_leaves: int, idx: Sequence[int]):
  """The learning rates of the adapted leaves, as a list (or one scalar)."""
  if isinstance(lr, (int, float)) or (hasattr(lr, "ndim") and
                                      not isinstance(lr, (dict, list, tuple))):
    return [lr] * len(idx)
  leaves, lr_def = jax.tree_util.tree_flatten(lr)
  if lr_def != treedef:
    raise ValueError(
        "a pytree inner learning rate must have the structure of the "
        f"parameters; got {lr_def}, expected {treedef}")
  return [leaves[i] for i in idx]


def adapt(loss_fn: LossFn,
          params: Params,
          *,
          steps: int,
          lr: Any,
          mask: Any = None,
          first_order: bool = False,
          per_step_lr: bool = False,
          unroll: bool | int = True,
          remat: bool = False,
          optimizer: optax.GradientTransformation | None = None,
          has_aux: bool = False,
          return_trajectory: bool = False,
          step_loss: bool = False):
  """Adapts ``params`` by ``steps`` gradient steps on ``loss_fn``.

  Args:
    loss_fn: ``params -> scalar`` support loss of one task (with ``has_aux``,
      ``params -> (scalar, aux)``; the aux is dropped).
    params: the meta-parameters (initial point of the inner loop).
    steps: number of inner steps (static; may differ at meta-test time).
    lr: inner learning rate(s), see the module docstring. Ignored when an
      ``optimizer`` is given.
    mask: which leaves adapt: ``None`` (all), a pytree of bools shaped like
      ``params``, or a predicate on the leaf's path string, see
      :func:`metajax.core.masks.from_predicate`.
    first_order: stop gradients through the inner gradients (FOMAML).
    per_step_lr: ``lr`` leaves carry a leading axis of length >= ``steps``.
    unroll: ``True`` for a Python-unrolled loop, ``False`` for ``lax.scan``,
      or an ``int`` unroll factor for ``lax.scan``.
    remat: rematerialise each inner step in the backward pass.
    optimizer: an optax inner optimiser instead of plain gradient descent
      (e.g. Reptile's Adam with ``b1=0``); its state starts fresh per task.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    return_trajectory: also return the parameters after every step, stacked
      on a leading axis of length ``steps`` (for MAML++'s multi-step loss).
    step_loss: ``loss_fn`` takes ``(params, t)``, ``t`` the 0-based step
      index (see the module docstring).

  Returns:
    The adapted parameters (a pytree like ``params``), or
    ``(adapted, trajectory)`` with ``return_trajectory``.
  """
  if steps < 0:
    raise ValueError(f"inner steps must be >= 0, got {steps}")
  leaves, treedef = jax.tree_util.tree_flatten(params)
  mask_leaves = masks_lib.resolve(mask, params)
  idx = [i for i, m in enumerate(mask_leaves) if m]

  def combine(adapted):
    full = list(leaves)
    for i, a in zip(idx, adapted):
      full[i] = a
    return jax.tree_util.tree_unflatten(treedef, full)

  def support_loss(adapted, t):
    out = loss_fn(combine(adapted), t) if step_loss else loss_fn(combine(adapted))
    return out[0] if has_aux else out

  grad_fn = jax.grad(support_loss)

  if optimizer is None:
    lrs = _lr_leaves(lr, treedef, len(leaves), idx)
    if per_step_lr:
      for l in lrs:
        n = np.shape(l)[0] if np.ndim(l) else 0
        if n < steps:
          raise ValueError(
              f"per-step learning rates cover {n} steps but {steps} inner "
              "steps were asked for")

    def step(adapted, step_lrs, t):
      g = grad_fn(adapted, t)
      if first_order:
        g = jax.lax.stop_gradient(g)
      return [p - a * d for p, a, d in zip(adapted, step_lrs, g)]

    def body(adapted, t):
      step_lrs = [l[t] for l in lrs] if per_step_lr else lrs
      new = step_fn(adapted, step_lrs, t)
      return new, new

    state0 = [leaves[i] for i in idx]
  else:
    def step(carry, t):
      adapted, opt_state = carry
      g = grad_fn(adapted, t)
      if first_order:
        g = jax.lax.stop_gradient(g)
      updates, opt_state = optimizer.update(g, opt_state, adapted)
      return optax.apply_updates(adapted, updates), opt_state

    def body(carry, t):
      new = step_fn(carry, t)
      return new, new[0]

    adapted0 = [leaves[i] for i in idx]
    state0 = (adapted0, optimizer.init(adapted0))

  step_fn = jax.checkpoint(step) if remat else step

  if unroll is True or steps == 0:
    state, traj = state0, []
    for t in range(steps):
      state, out = body(state, t)
      traj.append(out)
    if return_trajectory:
      traj = (jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *traj)
              if traj else None)
  else:
    state, traj = jax.lax.scan(body, state0, jnp.arange(steps),
                               unroll=max(int(unroll), 1))
  adapted = state if optimizer is None else state[0]
  result = combine(adapted)
  if not return_trajectory:
    return result
  if traj is None:
    return result, None
  # Stack frozen leaves along the step axis too, so the trajectory is a
  # params-shaped pytree with a leading ``steps`` axis.
  stacked = [jnp.broadcast_to(l, (steps,) + np.shape(l)) for l in leaves]
  for i, a in zip(idx, traj):
    stacked[i] = a
  return result, jax.tree_util.tree_unflatten(treedef, stacked)
