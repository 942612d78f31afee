"""Reptile (Nichol, Achiam & Schulman, 2018): move the initialisation towards
the weights adapted to each task.

"On First-Order Meta-Learning Algorithms", arXiv:1803.02999, Algorithm 2
(batched version). For a meta-batch of ``n`` tasks:

    phi_i = U^k_{tau_i}(theta)       k inner steps (Adam, beta1 = 0) on task i,
    theta <- theta + eps * (1/n) sum_i (phi_i - theta).

No gradient flows through ``U``. :meth:`Reptile.task_grad` returns the
pseudo-gradient ``g_i = theta - phi_i``, so that the generic
:func:`metajax.make_meta_step` (mean over tasks, then the outer optimiser)
with ``optax.sgd(eps)`` reproduces the update exactly:
``theta - eps * mean_i(theta - phi_i) = theta + eps * (mean_i phi_i - theta)``.
The meta step size is annealed linearly, ``eps_i = eps_0 + (eps_final -
eps_0) * i / meta_iters`` (``--meta-step`` to ``--meta-step-final`` in
openai/supervised-reptile), which is ``optax.linear_schedule``; see
:meth:`Reptile.outer_optimizer`.

Inner loop (openai/supervised-reptile, ``reptile.py``/``args.py``): ``k``
steps of Adam with ``beta1 = 0`` (``tf.train.AdamOptimizer(beta1=0)``: the
first moment is the current gradient, the second the usual EMA) on
minibatches of ``inner_batch_size`` examples of the task's training set. The
batches are consecutive slices of a stream of random permutations of the
examples (each example used once per pass; a batch may straddle two passes),
or, with ``replacement=True``, a fresh random subset per step. Meta-test
adapts for ``eval_inner_steps`` (50 in the paper) steps on batches of
``eval_inner_batch_size``.

Protocol notes (where metajax differs from the TensorFlow reference, and why):

* The support set plays the role of the reference's "mini dataset": sample
  meta-training tasks with ``train_shots`` support examples per class (the
  query set only feeds the reported metrics), meta-test tasks with ``shots``.
* Inner optimiser state. The reference creates one TF Adam slot set and
  never resets it: the second moments and the step count carry over from
  task to task, through meta-training and into every test task (evaluation
  restores the trained state after each task). With ``beta1 = 0`` the step
  is ``lr * g / sqrt(v)``: under carried moments ``v`` is a long-run
  average of squared gradients, so each coordinate moves in proportion to
  its gradient; fresh moments make the first step ``lr * sign(g)`` for
  every weight, however small its gradient. ``persistent_inner_state=True``
  (the paper settings) keeps the reference's behaviour: the state lives in
  ``MetaState.model_state['inner_state']``, every task of a meta-batch
  starts from it, and after the meta-step it becomes the mean of the tasks'
  final states (the reference threads it through the meta-batch's tasks one
  after another; with ``beta2 = 0.999`` and 5 tasks of 5 steps the two
  differ by a weight of at most ``1 - 0.999^20 = 2%`` on the older
  moments, and the step count advances by 5 instead of 25, which only
  changes Adam's bias correction in the first few hundred steps). Test tasks start from the trained state, which evaluation
  receives as ``mj.evaluate(..., model_state=state.model_state)``.
  ``False`` starts every task from fresh moments.
* Batch norm is :class:`~metajax.models.TransductiveBatchNorm` (statistics of
  the batch at hand), i.e. the reference's ``--transductive`` evaluation.
* The minibatch order is random but reproducible: the PRNG key is
  ``fold_in(PRNGKey(seed), fingerprint(support set))``, so every task gets
  its own permutation without a key in :class:`~metajax.Task`, and
  evaluating the same task twice gives the same numbers.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax

from metajax import configs
from metajax.algorithms.model_learner import ModelLearner
from metajax.core import inner
from metajax.core.tasks import Task

INNER_OPTIMIZERS = ("adam", "sgd")
#: the metrics key under which a meta-training task reports its final inner
#: optimiser state (``persistent_inner_state``); the meta-step consumes it.
INNER_STATE = "inner_state"


def task_key(seed: int, x: jax.Array) -> jax.Array:
  """A PRNG key for one task: ``seed`` folded with a fingerprint of ``x``.

  The fingerprint mixes the wrap-around sums of the float32 bit patterns of
  ``x`` and of their squares into one ``uint32``: integer sums do not depend
  on the order of the reduction, so the key is the same eagerly, under
  ``jit`` and under ``vmap`` (a float sum's last bit is not), different
  tasks get different keys and the same task always the same one.
  """
  bits = jax.lax.bitcast_convert_type(jnp.asarray(x, jnp.float32),
                                      jnp.uint32).reshape(-1)
  first = jnp.sum(bits, dtype=jnp.uint32)
  second = jnp.sum(bits * bits, dtype=jnp.uint32)
  # one fold-in (one threefry hash to compile), golden-ratio mixing
  fingerprint = first ^ (second * jnp.uint32(0x9E3779B9))
  return jax.random.fold_in(jax.random.PRNGKey(seed), fingerprint)


def _permutations(key: jax.Array, rows: int, n: int) -> jax.Array:
  """``rows`` independent random permutations of ``range(n)``, ``(rows, n)``.

  Argsort of random 32-bit words: one draw of random bits instead of a
  ``split`` plus ``jax.random.permutation`` per row, which is much cheaper to
  compile. (Ties, probability ~ ``n^2 / 2^33`` per row, are broken by index
  and still give a permutation.)
  """
  return jnp.argsort(jax.random.bits(key, (rows, n), jnp.uint32), axis=-1)


def minibatch_indices(key: jax.Array, num_examples: int, batch_size: int,
                      steps: int, *, replacement: bool = False) -> jax.Array:
  """Example indices of ``steps`` inner minibatches, ``(steps, batch_size)``.

  Without replacement this is supervised-reptile's ``_mini_batches``: the
  concatenation of independent random permutations of ``range(num_examples)``
  cut into consecutive batches (every example appears once per pass; a batch
  may span two passes). With replacement each batch is a random subset of
  ``batch_size`` distinct examples, drawn independently per step.
  """
  if num_examples < 1:
    raise ValueError(f"num_examples must be >= 1, got {num_examples}")
  if batch_size < 1:
    raise ValueError(f"inner batch size must be >= 1, got {batch_size}")
  if steps < 0:
    raise ValueError(f"steps must be >= 0, got {steps}")
  if steps == 0:
    return jnp.zeros((0, batch_size), jnp.int32)
  if replacement:
    if batch_size > num_examples:
      raise ValueError(
          f"inner batch size {batch_size} is larger than the {num_examples} "
          "support examples; sampling with replacement draws distinct "
          "examples per batch")
    perms = _permutations(key, steps, num_examples)
    return perms[:, :batch_size].astype(jnp.int32)
  passes = math.ceil(steps * batch_size / num_examples)
  flat = _permutations(key, passes, num_examples).reshape(-1)
  return flat[:steps * batch_size].reshape(steps, batch_size).astype(jnp.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class Reptile(ModelLearner):
  """Reptile over a flax model (see the module docstring for the equations).

  Meta-parameters are ``{'model': flax params}``; :meth:`task_grad` returns
  ``{'model': theta - phi}`` (use ``optax.sgd(eps)`` or
  :meth:`outer_optimizer` as the outer optimiser for the paper's update).

  Reptile shares MAML's inner loop (:func:`metajax.core.inner.adapt`) and
  its model-and-loss base, not MAML itself: it has no derivative order and no
  learned rates.

  Attributes (beyond ``model``, ``loss`` and the keyword-only
  ``pre_metrics_on``, ``ways`` of
  :class:`~metajax.algorithms.model_learner.ModelLearner`):
    inner_steps: inner iterations ``k`` at meta-training time.
    inner_lr: the inner Adam (or SGD) step size.
    inner_optimizer: ``'adam'`` (``b1 = 0``, ``b2 = 0.999``, ``eps = 1e-8``
      as TF's Adam), ``'sgd'`` (plain gradient descent at ``inner_lr``), or
      any ``optax.GradientTransformation`` (``inner_lr`` then unused).
    inner_batch_size: examples per inner minibatch; ``None`` uses the whole
      support set every step.
    eval_inner_steps: inner iterations at meta-test time (default 50).
    eval_inner_batch_size: minibatch size at meta-test time (``None``: the
      whole support set).
    replacement: sample each minibatch independently (see
      :func:`minibatch_indices`).
    seed: base seed of the per-task minibatch order (see :func:`task_key`).
    adapt_mask: which model parameters adapt (as :class:`~metajax.MAML`).
    unroll, remat: as :class:`~metajax.MAML` (the loop is never
      differentiated, so ``lax.scan`` is the default).
    persistent_inner_state: carry the inner optimiser's state (Adam's
      moments and step count) from task to task and into evaluation, as the
      official code does (see the module docstring); ``False``: fresh per
      task.
    inner_state: the carried state, bound by :meth:`with_model_state`
      (``None`` on a learner that has not been bound).
  """
  inner_steps: int = 5
  inner_lr: float = 1e-3
  eval_inner_steps: int | None = 50
  adapt_mask: Any = None
  unroll: bool | int = False
  remat: Any = False
  inner_optimizer: Any = "adam"
  inner_batch_size: int | None = 10
  eval_inner_batch_size: int | None = 5
  replacement: bool = False
  seed: int = 0
  persistent_inner_state: bool = False
  inner_state: Any = dataclasses.field(default=None, repr=False)

  def __post_init__(self):
    super().__post_init__()
    if self.inner_steps < 0:
      raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")
    if isinstance(self.inner_optimizer, str):
      if self.inner_optimizer not in INNER_OPTIMIZERS:
        raise ValueError(
            f"unknown inner optimizer {self.inner_optimizer!r}; choose one of "
            f"{INNER_OPTIMIZERS} or pass an optax.GradientTransformation")
    elif not isinstance(self.inner_optimizer, optax.GradientTransformation):
      raise ValueError(
          "inner_optimizer must be 'adam', 'sgd' or an "
          f"optax.GradientTransformation, got {type(self.inner_optimizer).__name__}")
    for name in ("inner_batch_size", "eval_inner_batch_size"):
      b = getattr(self, name)
      if b is not None and b < 1:
        raise ValueError(f"{name} must be >= 1 or None, got {b}")
    if self.eval_inner_steps is not None and self.eval_inner_steps < 0:
      raise ValueError(
          f"eval_inner_steps must be >= 0, got {self.eval_inner_steps}")

  @staticmethod
  def outer_optimizer(setting: str | None = None, *, meta_step: float = 1.0,
                      meta_step_final: float = 0.0,
                      meta_iters: int = 100_000) -> optax.GradientTransformation:
    """``optax.sgd`` on the linearly annealed meta step size ``eps``.

    ``eps_i = meta_step + (meta_step_final - meta_step) * i / meta_iters`` at
    meta-iteration ``i`` (constant ``meta_step_final`` afterwards). With a
    ``setting`` the paper's values (``metajax.configs.get('reptile',
    setting).outer``, which also holds the ``train_shots`` and
    ``meta_batch`` of the training tasks) replace the arguments.
    """
    if setting is not None:
      o = configs.get("reptile", setting).outer
      meta_step, meta_step_final, meta_iters = (
          o["meta_step"], o["meta_step_final"], o["meta_iters"])
    if meta_iters < 1:
      raise ValueError(f"meta_iters must be >= 1, got {meta_iters}")
    return optax.sgd(optax.linear_schedule(meta_step, meta_step_final,
                                           meta_iters))

  @property
  def default_eval_steps(self) -> int:
    return (self.inner_steps if self.eval_inner_steps is None
            else self.eval_inner_steps)

  # -- inner loop --------------------------------------------------------
  def update_rule(self) -> inner.UpdateRule:
    """The inner step: TF-style Adam with ``b1 = 0``, plain SGD, or the
    given optax transformation."""
    if self.inner_optimizer == "adam":
      return optax.adam(self.inner_lr, b1=0.0, b2=0.999, eps=1e-8)
    if self.inner_optimizer == "sgd":
      return inner.sgd(self.inner_lr)
    return self.inner_optimizer

  _UNSET: ClassVar[object] = object()

  def adapt(self, params, support_x, support_y, *, steps=None,
            return_trajectory=False, batch_size=_UNSET,
            return_rule_state=False):
    """Task weights ``phi`` after ``steps`` (default ``inner_steps``) steps.

    Args:
      params: ``{'model': theta}``.
      support_x, support_y: ``(S, ...)`` support set of one task.
      steps: inner iterations.
      return_trajectory: also return the weights after every step (stacked
        on a leading ``steps`` axis).
      batch_size: minibatch size (default ``inner_batch_size``; ``None``:
        full batch).
      return_rule_state: also return the inner optimiser's final state.
    """
    steps = self.inner_steps if steps is None else steps
    if batch_size is Reptile._UNSET:
      batch_size = self.inner_batch_size
    n = support_x.shape[0]
    # A batch of all n examples is the full support set in any order (the
    # loss is a mean, batch norm uses the batch's statistics).
    full_batch = batch_size is None or batch_size == n

    if full_batch:
      loss_fn = lambda p: self.support_loss(p, support_x, support_y)
    else:
      idx = minibatch_indices(task_key(self.seed, support_x), n, batch_size,
                              steps, replacement=self.replacement)

      def loss_fn(p, t):
        b = idx[t]
        return self.support_loss(p, support_x[b], support_y[b])

    return inner.adapt(
        loss_fn, params["model"], steps=steps, update=self.update_rule(),
        mask=self.adapt_mask, unroll=self.unroll,
        remat=self.remat, return_trajectory=return_trajectory,
        step_loss=not full_batch, rule_state=self._start_state(),
        return_rule_state=return_rule_state)

  def _start_state(self):
    """The inner optimiser state a task starts from (``None``: fresh)."""
    if not self.persistent_inner_state:
      return None
    if self.inner_state is None:
      raise ValueError(
          "Reptile(persistent_inner_state=True) adapts from the inner "
          "optimiser state carried over meta-training, and this learner has "
          "none bound: use learner.with_model_state(state.model_state) (as "
          "mj.evaluate(..., model_state=state.model_state) and "
          "mj.make_meta_step do), or persistent_inner_state=False")
    return self.inner_state

  # -- state carried across tasks -------------------------------------------
  def init_model_state(self, params, task: Task):
    running = super().init_model_state(params, task)
    if not self.persistent_inner_state:
      return running
    return {"running_stats": running,
            INNER_STATE: inner.init_rule_state(
                self.update_rule(), params["model"], self.adapt_mask)}

  def with_model_state(self, model_state, *, training=False):
    if not self.persistent_inner_state or model_state is None:
      return super().with_model_state(model_state, training=training)
    bound = super().with_model_state(model_state["running_stats"],
                                     training=training)
    return dataclasses.replace(bound, inner_state=model_state[INNER_STATE])

  def update_model_state(self, model_state, metrics):
    if not self.persistent_inner_state:
      return super().update_model_state(model_state, metrics)
    metrics = dict(metrics)
    carried = metrics.pop(INNER_STATE)
    running, metrics = super().update_model_state(
        model_state["running_stats"], metrics)
    # the meta-batch mean; integer leaves (Adam's count) are equal per task
    carried = jax.tree_util.tree_map(
        lambda old, new: (jnp.round(new) if jnp.issubdtype(
            old.dtype, jnp.integer) else new).astype(old.dtype),
        model_state[INNER_STATE], carried)
    return {"running_stats": running, INNER_STATE: carried}, metrics

  # -- Learner -----------------------------------------------------------
  def task_grad(self, params, task: Task, *, iteration=0):
    """``((query loss, metrics), {'model': theta - phi})`` for one task
    (with ``persistent_inner_state`` the metrics also carry the task's final
    inner optimiser state under :data:`INNER_STATE`)."""
    del iteration
    theta = jax.lax.stop_gradient(params["model"])
    phi, final_state = self.adapt(params, task.support_x, task.support_y,
                                  return_rule_state=True)
    phi = jax.lax.stop_gradient(phi)
    metrics = self.query_metrics(phi, task)
    if self.persistent_inner_state:
      metrics[INNER_STATE] = jax.lax.stop_gradient(final_state)
    metrics.update(self.pre_metrics(theta, task))
    grads = {"model": jax.tree_util.tree_map(jnp.subtract, theta, phi)}
    return (metrics["loss"], metrics), grads

  def evaluate(self, params, task: Task, *, steps=None):
    """Query metrics after 0..``steps`` (default ``eval_inner_steps``) inner
    steps on minibatches of ``eval_inner_batch_size``; arrays of length
    ``steps + 1``."""
    evaluator = dataclasses.replace(
        self, inner_batch_size=self.eval_inner_batch_size)
    return ModelLearner.evaluate(evaluator, params, task, steps=steps)
