"""The inner loop: steps of an update rule on a task's support loss.

:func:`adapt` is the one inner loop every optimisation-based learner shares.
It is a pure function of the parameters, so the outer ``jax.grad`` through it
gives MAML's exact second-order meta-gradient.

What a step does to the gradient is an *update rule*: an optax
``GradientTransformation`` (pure ``(init, update)``), composed with
``optax.chain`` from small pieces, so each method states its inner loop as
one line instead of a set of flags:

=========================== ==================================================
rule                        inner step
=========================== ==================================================
``sgd(lr)``                 ``-lr * g``; ``lr`` a scalar (MAML) or a pytree of
                            rates shaped like the parameters (Meta-SGD)
``per_step_sgd(lrs)``       ``-lrs[t] * g``: one rate per step per tensor
                            (MAML++'s LSLR); ``t`` is counted in the state
``first_order(when)``       ``stop_gradient(g)`` (first-order MAML); ``when``
                            may be a traced bool (MAML++'s annealing)
``proximal(theta, lam)``    ``g + lam (phi - theta)`` (iMAML's proximal term)
any optax transformation    e.g. ``optax.adam(lr, b1=0)`` (Reptile)
=========================== ==================================================

e.g. ``optax.chain(first_order(), sgd(0.4))`` is first-order MAML's step.
Learned rates are traced values captured by the rule, so the outer gradient
reaches them.

``mask`` picks which parameters adapt (the rest keep their meta-learned
values and get no inner gradient, e.g. head-only adaptation for ANIL). The
rule sees the parameters as a pytree with ``None`` at the frozen leaves, as
optax transformations handle natively.

``step_loss=True`` makes the support loss depend on the step index ``t``
(``loss_fn(params, t)``): inner minibatches (Reptile) or per-step batch-norm
weights (MAML++). ``t`` is a Python ``int`` when unrolled and a traced
``int32`` scalar under ``lax.scan`` or ``remat``, so index with it (``a[t]``)
rather than branch on it.

Scanned or unrolled: ``unroll=True`` writes the steps out in Python (best
run time for conv nets on XLA CPU, longer compile), ``unroll=False`` uses
``lax.scan`` (compile time independent of ``steps``), an integer ``k > 1``
scans with ``k`` steps unrolled per iteration. ``remat`` wraps segments of
steps in ``jax.checkpoint`` so the backward pass recomputes the inner forward
pass instead of storing it (same numbers, less memory): every step
(``True``), ``sqrt(steps)``-step segments (``'sqrt'``), or any schedule of
:mod:`metajax.core.remat`.

References:
  Finn et al. 2017, "Model-Agnostic Meta-Learning" (arXiv:1703.03400);
  Li et al. 2017, "Meta-SGD" (arXiv:1707.09835);
  Antoniou et al. 2019, "How to train your MAML" (arXiv:1810.09502);
  Rajeswaran et al. 2019, "Meta-Learning with Implicit Gradients"
  (arXiv:1909.04630).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax.core import masks as masks_lib
from metajax.core import remat as remat_lib

Params = Any
LossFn = Callable[[Params], jax.Array]
UpdateRule = optax.GradientTransformation


def _is_none(x) -> bool:
  return x is None


def _map(fn, tree, *rest):
  """``tree_map`` that keeps the ``None`` of frozen leaves in ``tree``."""
  return jax.tree_util.tree_map(
      lambda a, *r: None if a is None else fn(a, *r), tree, *rest,
      is_leaf=_is_none)


def _is_scalar_rate(lr) -> bool:
  return isinstance(lr, (int, float)) or (
      hasattr(lr, "ndim") and not isinstance(lr, (dict, list, tuple)))


def _check_rate_tree(lr, updates):
  want = jax.tree_util.tree_structure(updates, is_leaf=_is_none)
  got = jax.tree_util.tree_structure(lr)
  if got != want:
    raise ValueError(
        "a pytree inner learning rate must have the structure of the "
        f"parameters; got {got}, expected {want}")


def sgd(lr) -> UpdateRule:
  """Gradient descent, ``-lr * g``: a scalar rate, or a pytree of rates
  (scalars or per-element arrays) shaped like the parameters (Meta-SGD)."""
  if lr is None:
    raise ValueError("sgd needs a learning rate, got None")

  def update(updates, state, params=None):
    del params
    if _is_scalar_rate(lr):
      return _map(lambda g: -(lr * g), updates), state
    _check_rate_tree(lr, updates)
    return _map(lambda g, a: -(a * g), updates, lr), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                      update)


class PerStepState(NamedTuple):
  """The inner step index ``t`` of :func:`per_step_sgd`."""
  count: jax.Array


def per_step_sgd(lrs) -> UpdateRule:
  """``-lrs[t] * g`` at inner step ``t``: ``lrs`` is a pytree shaped like the
  parameters whose leaves carry a leading step axis (MAML++'s per-layer
  per-step rates); check them with :func:`check_per_step_rates` first."""

  def init(params):
    del params
    return PerStepState(jnp.zeros((), jnp.int32))

  def update(updates, state, params=None):
    del params
    _check_rate_tree(lrs, updates)
    t = state.count
    return (_map(lambda g, a: -(a[t] * g), updates, lrs),
            PerStepState(t + 1))

  return optax.GradientTransformation(init, update)


def check_per_step_rates(lrs, steps: int) -> None:
  """``ValueError`` unless every leaf of ``lrs`` has a leading axis of at
  least ``steps`` (indexing past it would silently clamp)."""
  for l in jax.tree_util.tree_leaves(lrs):
    n = np.shape(l)[0] if np.ndim(l) else 0
    if n < steps:
      raise ValueError(
          f"per-step learning rates cover {n} steps but {steps} inner steps "
          "were asked for")


def first_order(when=True) -> UpdateRule:
  """Treats the inner gradient as a constant (first-order MAML): the outer
  gradient skips its second-order terms. ``when`` may be a traced boolean,
  e.g. a derivative order annealed over meta-iterations."""

  def update(updates, state, params=None):
    del params
    if when is True:
      return _map(jax.lax.stop_gradient, updates), state
    if when is False:
      return updates, state
    return _map(lambda g: jnp.where(when, jax.lax.stop_gradient(g), g),
                updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                      update)


def proximal(theta, lam) -> UpdateRule:
  """Adds the gradient of ``lam/2 ||phi - theta||^2``: ``g + lam (phi -
  theta)`` (iMAML's proximal regulariser towards the meta-parameters
  ``theta``, a pytree shaped like the parameters)."""

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("proximal needs the current parameters")
    return _map(lambda g, p, t: g + lam * (p - t), updates, params,
                theta), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(),
                                      update)


def adapt(loss_fn: LossFn,
          params: Params,
          *,
          steps: int,
          lr: Any = None,
          update: UpdateRule | None = None,
          mask: Any = None,
          unroll: bool | int = True,
          remat: bool = False,
          has_aux: bool = False,
          return_trajectory: bool = False,
          step_loss: bool = False,
          rule_state: Any = None,
          return_rule_state: bool = False):
  """Adapts ``params`` by ``steps`` steps of an update rule on ``loss_fn``.

  Args:
    loss_fn: ``params -> scalar`` support loss of one task (with ``has_aux``,
      ``params -> (scalar, aux)``; the aux is dropped).
    params: the meta-parameters (initial point of the inner loop).
    steps: number of inner steps (static; may differ at meta-test time).
    lr: shorthand for ``update=sgd(lr)``.
    update: the update rule (see the module docstring); its state starts
      fresh for every call, i.e. per task, unless ``rule_state`` is given.
    mask: which leaves adapt: ``None`` (all), a pytree of bools shaped like
      ``params``, or a predicate on the leaf's path string, see
      :func:`metajax.core.masks.from_predicate`.
    unroll: ``True`` for a Python-unrolled loop, ``False`` for ``lax.scan``,
      or an ``int`` unroll factor for ``lax.scan``.
    remat: rematerialisation of the inner loop in the backward pass:
      ``False`` (none), ``True`` (every step), ``'sqrt'``, ``'every:k'``,
      ``'conv'`` or a :class:`metajax.core.remat.Remat` (same numbers, less
      memory; see :mod:`metajax.core.remat`).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    return_trajectory: also return the parameters after every step, stacked
      on a leading axis of length ``steps`` (for MAML++'s multi-step loss and
      adaptation curves).
    step_loss: ``loss_fn`` takes ``(params, t)``, ``t`` the 0-based step
      index (see the module docstring).
    rule_state: the update rule's state to start from (e.g. Adam moments
      kept across tasks, as openai/supervised-reptile does), shaped as
      :func:`init_rule_state` makes it; ``None``: ``update.init``.
    return_rule_state: also return the rule's state after the last step.

  Returns:
    The adapted parameters (a pytree like ``params``); with
    ``return_trajectory`` ``(adapted, trajectory)``; with
    ``return_rule_state`` the final rule state is appended to either.
  """
  if steps < 0:
    raise ValueError(f"inner steps must be >= 0, got {steps}")
  if (update is None) == (lr is None):
    raise ValueError("give the inner step as exactly one of lr= or update=")
  rule = sgd(lr) if update is None else update
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keep = masks_lib.resolve(mask, params)

  def combine(adapted):
    new = jax.tree_util.tree_leaves(adapted, is_leaf=_is_none)
    return jax.tree_util.tree_unflatten(
        treedef, [a if k else l for a, l, k in zip(new, leaves, keep)])

  def support_loss(adapted, t):
    full = combine(adapted)
    out = loss_fn(full, t) if step_loss else loss_fn(full)
    return out[0] if has_aux else out

  grad_fn = jax.grad(support_loss)

  def step(carry, t):
    adapted, rule_state = carry
    updates, rule_state = rule.update(grad_fn(adapted, t), rule_state, adapted)
    return optax.apply_updates(adapted, updates), rule_state

  adapted0 = jax.tree_util.tree_unflatten(
      treedef, [l if k else None for l, k in zip(leaves, keep)])
  carry = (adapted0, rule.init(adapted0) if rule_state is None
            else rule_state)
  schedule = remat_lib.resolve(remat)
  if schedule is None or steps == 0:
    carry, trajectory = _run_steps(step, carry, steps, unroll)
  else:
    carry, trajectory = _run_segments(step, carry, steps, unroll, schedule)
  result = combine(carry[0])
  extra = (carry[1],) if return_rule_state else ()
  if not return_trajectory:
    return (result,) + extra if extra else result
  if trajectory is not None:
    # Frozen leaves are broadcast along the step axis too, so the trajectory
    # is a params-shaped pytree with a leading ``steps`` axis.
    moved = jax.tree_util.tree_leaves(trajectory, is_leaf=_is_none)
    trajectory = jax.tree_util.tree_unflatten(treedef, [
        a if k else jnp.broadcast_to(l, (steps,) + np.shape(l))
        for a, l, k in zip(moved, leaves, keep)])
  return (result, trajectory) + extra


def _stack(trees):
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def _run_steps(step, carry, steps: int, unroll):
  """``(carry, trajectory)`` after ``steps`` plain steps (unrolled or
  scanned); the trajectory stacks the adapted parameters of every step."""
  if unroll is True or steps == 0:
    trajectory = []
    for t in range(steps):
      carry = step(carry, t)
      trajectory.append(carry[0])
    return carry, (_stack(trajectory) if trajectory else None)

  def body(carry, t):
    carry = step(carry, t)
    return carry, carry[0]

  return jax.lax.scan(body, carry, jnp.arange(steps),
                      unroll=max(int(unroll), 1))


def _run_segments(step, carry, steps: int, unroll, schedule):
  """:func:`_run_steps` with every segment of ``schedule`` checkpointed
  (see :mod:`metajax.core.remat`): the backward pass keeps the carry at
  segment boundaries and recomputes one segment at a time."""
  length = schedule.segment_length(steps)

  def segment(n):
    def run(carry, first):
      outs = []
      for i in range(n):
        carry = step(carry, first + i)
        outs.append(carry[0])
      return carry, _stack(outs)
    return schedule.checkpoint(run)

  pieces = []
  if unroll is True:
    for first, n in remat_lib.segments(steps, length):
      carry, outs = segment(n)(carry, first)
      pieces.append(outs)
  else:
    full, rest = divmod(steps, length)
    if full:
      carry, outs = jax.lax.scan(segment(length), carry,
                                 jnp.arange(full) * length,
                                 unroll=max(int(unroll), 1))
      pieces.append(jax.tree_util.tree_map(
          lambda a: a.reshape((full * length,) + a.shape[2:]), outs))
    if rest:
      carry, outs = segment(rest)(carry, full * length)
      pieces.append(outs)
  trajectory = jax.tree_util.tree_map(
      lambda *xs: jnp.concatenate(xs), *pieces)
  return carry, trajectory


def init_rule_state(update: UpdateRule, params: Params, mask: Any = None):
  """The fresh state of ``update`` as :func:`adapt` builds it for
  ``params`` under ``mask`` (frozen leaves are ``None``): the starting point
  of a rule state carried across tasks (``adapt(rule_state=...)``)."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keep = masks_lib.resolve(mask, params)
  return update.init(jax.tree_util.tree_unflatten(
      treedef, [l if k else None for l, k in zip(leaves, keep)]))
