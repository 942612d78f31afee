"""MAML++ (Antoniou, Edwards & Storkey, 2019): "How to train your MAML".

ICLR 2019, arXiv:1810.09502. MAML (see :mod:`metajax.algorithms.maml`) with the
paper's stabilising changes, each a field of :class:`MAMLPlusPlus`:

* LSLR, per-layer per-step learned inner rates
  (``learn_inner_lr='per_step_per_tensor'``):
  ``phi_{t+1} = phi_t - alpha_{l,t} * grad_l L_S(phi_t; BN_t)`` for every
  parameter tensor ``l`` and step ``t``.
* MSL, the multi-step loss: the meta-objective is
  ``sum_{t<K} w_t(e) L_Q(phi_{t+1}; BN_t)`` with weights annealed over the
  epochs ``e = iteration // iters_per_epoch``
  (``get_per_step_loss_importance_vector`` in the authors' code):

      w_t(e)     = max(1/K - e/(K E), 0.03/K)                   for t < K-1,
      w_{K-1}(e) = min(1/K + e (K-1)/(K E), 1 - 0.03 (K-1)/K),

  ``E = msl_epochs``. The weights sum to 1 and move from uniform towards the
  last step; from epoch ``E`` on only the last step's loss is used
  (``w = (0, ..., 0, 1)``), as in the authors' ``forward``.
* DA, derivative-order annealing: first-order meta-gradients (no
  second-order terms, as :attr:`MAML.first_order`) while
  ``e < first_order_epochs``, exact second order afterwards. The authors'
  configs write ``first_order_to_second_order_epoch = N`` meaning "second
  order once epoch > N", i.e. ``first_order_epochs = N + 1`` (``-1 -> 0``).
* BNWB, per-step batch-norm weights: every batch-norm scale/shift has a
  leading axis of length ``K``; inner step ``t`` (support pass at
  ``phi_t`` and query pass at ``phi_{t+1}``) uses row ``t``. They are
  meta-learned, not adapted in the inner loop (``adapt_bn=False``, the
  authors' ``enable_inner_loop_optimizable_bn_params = False``).
* BNRS, per-step running statistics: not needed. The authors keep per-step
  running means/variances but normalise with batch statistics
  (``F.batch_norm(..., training=True)``) in training and evaluation alike;
  metajax's :class:`~metajax.models.TransductiveBatchNorm` normalises every
  call with its own batch statistics (per task, per set, per step), so the
  policy is transductive batch norm with no running statistics at all.
* CA, cosine annealing of the outer Adam rate per epoch:
  :meth:`MAMLPlusPlus.outer_optimizer`.

The annealed quantities are functions of the meta-iteration, which is
outer state: :func:`metajax.make_meta_step` passes ``state.step`` to
:meth:`MAMLPlusPlus.meta_grad` as ``iteration`` (and so does
:func:`metajax.training.fit`, which runs that step), and the learner object
holds only constants. With a traced ``iteration`` the MSL weights are computed
on the device and the phase (first/second order x multi-step/last-step loss)
is picked by ``lax.switch`` outside the task map, so each meta-step runs only
its own phase's program and a run never re-compiles; a Python ``int``
``iteration`` (a direct call) fixes the phase at trace time.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax import configs
from metajax.algorithms.maml import MAML
from metajax.core import inner
from metajax.core import masks as masks_lib
from metajax.core import task_map as task_map_lib
from metajax.core.tasks import Task


def is_norm_path(path: str) -> bool:
  """Whether a parameter path belongs to a normalisation layer.

  True when a path component starts with ``norm``, ``batchnorm`` or ``bn``
  (case-insensitive): ``'norm0/scale'`` (metajax's Conv4),
  ``'BatchNorm_0/bias'`` (flax's default names).
  """
  return any(part.lower().startswith(("norm", "batchnorm", "bn"))
             for part in path.split("/"))


def msl_weights(epoch: int, steps: int, msl_epochs: int) -> np.ndarray:
  """The annealed multi-step-loss weights ``(steps,)`` at ``epoch``.

  The formula of the module docstring (valid for ``epoch < msl_epochs``;
  :meth:`MAMLPlusPlus.loss_weights_at` switches to the last step only
  afterwards). ``steps = 1`` gives ``[1.0]``.
  """
  if steps < 1:
    raise ValueError(f"the multi-step loss needs >= 1 inner step, got {steps}")
  if msl_epochs < 1:
    raise ValueError(f"msl_epochs must be >= 1, got {msl_epochs}")
  if epoch < 0:
    raise ValueError(f"epoch must be >= 0, got {epoch}")
  k = steps
  decay = 1.0 / k / msl_epochs
  floor = 0.03 / k
  w = np.full((k,), 1.0 / k)
  w[:-1] = np.maximum(w[:-1] - epoch * decay, floor)
  w[-1] = min(1.0 / k + epoch * (k - 1) * decay, 1.0 - (k - 1) * floor)
  return w


@dataclasses.dataclass(frozen=True, eq=False)
class MAMLPlusPlus(MAML):
  """MAML++ over a flax model (equations in the module docstring).

  Meta-parameters: ``{'model': ..., 'inner_lr': ...}``; with
  ``per_step_bn`` every normalisation leaf of ``'model'`` has shape
  ``(inner_steps, *shape)``.

  Attributes (beyond :class:`~metajax.MAML`'s; ``first_order=True`` forces
  first order throughout, ``adapt_mask`` further restricts adaptation):
    inner_steps: ``K`` (>= 1).
    learn_inner_lr: default ``'per_step_per_tensor'`` (LSLR).
    multi_step_loss: use MSL during the first ``msl_epochs`` epochs.
    msl_epochs: ``E``, the annealing length in epochs.
    first_order_epochs: epochs trained with first-order meta-gradients.
    iters_per_epoch: meta-iterations per epoch (500 in the paper).
    per_step_bn: per-step batch-norm scale/shift (BNWB).
    adapt_bn: whether batch-norm parameters adapt in the inner loop (must be
      False with ``per_step_bn``, as in the authors' code).
    norm_predicate: which parameter paths are batch-norm parameters.

  The meta-iteration is not a field: it is the ``iteration`` argument of
  :meth:`task_loss` / :meth:`meta_grad` (``state.step`` in the meta-step).
  """
  inner_steps: int = 5
  inner_lr: float = 0.01
  learn_inner_lr: str | None = "per_step_per_tensor"
  multi_step_loss: bool = True
  msl_epochs: int = 15
  first_order_epochs: int = 11
  iters_per_epoch: int = 500
  per_step_bn: bool = True
  adapt_bn: bool = False
  norm_predicate: Callable[[str], bool] = is_norm_path

  def __post_init__(self):
    super().__post_init__()
    if self.inner_steps < 1:
      raise ValueError(f"MAML++ needs inner_steps >= 1, got {self.inner_steps}")
    if self.multi_step_loss and self.msl_epochs < 1:
      raise ValueError(f"msl_epochs must be >= 1, got {self.msl_epochs}")
    if self.first_order_epochs < 0:
      raise ValueError(
          f"first_order_epochs must be >= 0, got {self.first_order_epochs}")
    if self.iters_per_epoch < 1:
      raise ValueError(
          f"iters_per_epoch must be >= 1, got {self.iters_per_epoch}")
    if self.eval_query_context != "batch":
      raise ValueError("MAML++ scores queries with its per-step batch norm; "
                       "eval_query_context must be 'batch'")
    if getattr(self.model, "norm", None) == "running":
      raise ValueError(
          "MAML++ normalises with per-step batch statistics of each batch; "
          "a model with norm='running' (running averages) is not supported")
    if self.per_step_bn and self.adapt_bn:
      raise ValueError(
          "per_step_bn requires adapt_bn=False: per-step batch-norm weights "
          "are meta-learned, not adapted (MAML++'s BNWB)")

  @staticmethod
  def outer_optimizer(setting: str | None = None, *, meta_lr: float = 1e-3,
                      min_lr: float = 1e-5, total_epochs: int = 100,
                      iters_per_epoch: int = 500,
                      clip: float | None = None) -> optax.GradientTransformation:
    """Adam with the per-epoch cosine schedule (CA).

    ``lr(i) = min_lr + (meta_lr - min_lr) (1 + cos(pi e / total_epochs)) / 2``
    with ``e = i // iters_per_epoch`` (torch's ``CosineAnnealingLR`` stepped
    once per epoch), after an element-wise clip to ``[-clip, clip]`` if
    given. With a ``setting`` the authors' values
    (``metajax.configs.get('mamlpp', setting)``) replace the arguments.
    """
    if setting is not None:
      paper = configs.get("mamlpp", setting)
      o = paper.outer
      meta_lr, min_lr, total_epochs, clip = (
          o["meta_lr"], o["min_lr"], o["total_epochs"], o["clip"])
      iters_per_epoch = paper.learner["iters_per_epoch"]
    if total_epochs < 1 or iters_per_epoch < 1:
      raise ValueError("total_epochs and iters_per_epoch must be >= 1")

    def schedule(count):
      epoch = jnp.minimum(count // iters_per_epoch, total_epochs)
      return min_lr + 0.5 * (meta_lr - min_lr) * (
          1 + jnp.cos(math.pi * epoch / total_epochs))

    adam = optax.adam(schedule)
    return optax.chain(optax.clip(clip), adam) if clip else adam

  # -- schedules ---------------------------------------------------------
  def epoch_at(self, iteration: int) -> int:
    return int(iteration) // self.iters_per_epoch

  def first_order_at(self, iteration: int) -> bool:
    """Whether meta-iteration ``iteration`` uses first-order gradients."""
    return bool(self.first_order or
                self.epoch_at(iteration) < self.first_order_epochs)

  def msl_active_at(self, iteration: int) -> bool:
    """Whether meta-iteration ``iteration`` uses the multi-step loss."""
    return bool(self.multi_step_loss and self.inner_steps > 1 and
                self.epoch_at(iteration) < self.msl_epochs)

  def loss_weights_at(self, iteration: int) -> np.ndarray:
    """The ``(K,)`` per-step query-loss weights at ``iteration``."""
    if self.msl_active_at(iteration):
      return msl_weights(self.epoch_at(iteration), self.inner_steps,
                         self.msl_epochs)
    w = np.zeros((self.inner_steps,))
    w[-1] = 1.0
    return w

  def loss_weights_traced(self, iteration: jax.Array) -> jax.Array:
    """:meth:`loss_weights_at` in ``jnp`` for a traced ``iteration``."""
    k, e_max = self.inner_steps, max(self.msl_epochs, 1)
    epoch = iteration // self.iters_per_epoch
    decay, floor = 1.0 / k / e_max, 0.03 / k
    dtype = jnp.result_type(float)
    early = jnp.maximum(1.0 / k - epoch * decay, floor)
    last = jnp.minimum(1.0 / k + epoch * (k - 1) * decay, 1.0 - (k - 1) * floor)
    msl = jnp.concatenate([jnp.full((k - 1,), early, dtype),
                           jnp.reshape(last, (1,)).astype(dtype)])
    only_last = jnp.zeros((k,), dtype).at[-1].set(1.0)
    if not (self.multi_step_loss and k > 1):
      return only_last
    return jnp.where(epoch < self.msl_epochs, msl, only_last)

  def phase(self, iteration: int) -> tuple[bool, bool]:
    """``(first_order, multi_step_loss)`` at a Python-int ``iteration``."""
    return self.first_order_at(iteration), self.msl_active_at(iteration)

  def phases(self) -> list[tuple[bool, bool]]:
    """Every phase a run can reach (what a traced step compiles)."""
    orders = ([True] if self.first_order else [False]
              if self.first_order_epochs == 0 else [True, False])
    msl = ([True, False] if self.multi_step_loss and self.inner_steps > 1
           else [False])
    return [(fo, m) for fo in orders for m in msl]

  def phase_index(self, iteration: jax.Array) -> jax.Array:
    """Index into :meth:`phases` of a traced ``iteration``."""
    epoch = iteration // self.iters_per_epoch
    fo = jnp.asarray(self.first_order) | (epoch < self.first_order_epochs)
    msl = (jnp.asarray(self.multi_step_loss and self.inner_steps > 1) &
           (epoch < self.msl_epochs))
    index = jnp.zeros((), jnp.int32)
    for i, (p_fo, p_msl) in enumerate(self.phases()):
      index = jnp.where((fo == p_fo) & (msl == p_msl), i, index)
    return index

  # -- parameters --------------------------------------------------------
  def _norm_mask(self, model_params):
    return masks_lib.from_predicate(model_params, self.norm_predicate)

  def init(self, rng, task: Task):
    params = super().init(rng, task)
    if self.per_step_bn:
      k = self.inner_steps
      params["model"] = jax.tree_util.tree_map(
          lambda a, is_norm: (jnp.broadcast_to(a, (k,) + a.shape) + 0
                              if is_norm else a),
          params["model"], self._norm_mask(params["model"]))
    return params

  def step_params(self, model_params, t):
    """The model parameters used at inner step ``t`` (batch-norm row
    ``min(t, K-1)``); ``t`` may be traced."""
    if not self.per_step_bn:
      return model_params
    last = self.inner_steps - 1
    t = min(t, last) if isinstance(t, int) else jnp.minimum(t, last)
    return jax.tree_util.tree_map(
        lambda a, is_norm: a[t] if is_norm else a, model_params,
        self._norm_mask(model_params))

  def _inner_mask(self, model_params):
    user = masks_lib.resolve(self.adapt_mask, model_params)
    norm = jax.tree_util.tree_leaves(self._norm_mask(model_params))
    keep = [u and (self.adapt_bn or not n) for u, n in zip(user, norm)]
    return jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(model_params), keep)

  # -- Learner -----------------------------------------------------------
  def adapt(self, params, support_x, support_y, *, steps=None,
            return_trajectory=False, first_order=None):
    """Adapted model parameters after ``steps`` (default ``K``) steps.

    Beyond ``K`` steps (meta-test) the last step's rates and batch-norm
    weights are reused. ``first_order`` (default: the ``first_order`` field)
    is the derivative order of this call, set by :meth:`task_loss` from the
    iteration.
    """
    steps = self.inner_steps if steps is None else steps
    if self.learn_inner_lr == "per_step_per_tensor" and steps > self.inner_steps:
      extra = steps - self.inner_steps
      params = {**params, "inner_lr": jax.tree_util.tree_map(
          lambda l: jnp.concatenate([l, jnp.repeat(l[-1:], extra)]),
          params["inner_lr"])}
    if self.learn_inner_lr == "per_step_per_tensor":
      inner.check_per_step_rates(params["inner_lr"], steps)

    def loss_fn(p, t):
      return self.support_loss(self.step_params(p, t), support_x, support_y)

    return inner.adapt(
        loss_fn, params["model"], steps=steps,
        update=self.update_rule(params, first_order=first_order),
        mask=self._inner_mask(params["model"]), unroll=self.unroll,
        remat=self.remat, return_trajectory=return_trajectory,
        step_loss=True)

  def predict(self, params, state, x):
    del params
    return self.apply(self.step_params(state, self.inner_steps - 1), x)

  def phase_loss(self, params, task: Task, weights, *, first_order,
                 multi_step: bool):
    """``(objective, metrics)`` of one phase: ``first_order`` (a bool, maybe
    traced) and ``multi_step`` (static) fix the derivative order and whether
    the objective is the ``weights``-weighted sum of per-step query losses or
    the last step's loss."""
    k = self.inner_steps
    qx, qy = task.query_x, task.query_y
    if multi_step:
      _, traj = self.adapt(params, task.support_x, task.support_y,
                           return_trajectory=True, first_order=first_order)
      outs = [self.apply(self.step_params(
          jax.tree_util.tree_map(lambda a: a[t], traj), t), qx)
              for t in range(k)]
      objective = sum(weights[t] * self.loss_fn(outs[t], qy) for t in range(k))
      final = outs[-1]
    else:
      adapted = self.adapt(params, task.support_x, task.support_y,
                           first_order=first_order)
      final = self.predict(params, adapted, qx)
      objective = self.loss_fn(final, qy)
    metrics = self.metrics(final, qy)
    metrics["msl_loss"] = jax.lax.stop_gradient(objective)
    metrics.update(self.pre_metrics(self.step_params(params["model"], 0), task))
    return objective, metrics

  def task_loss(self, params, task: Task, *, iteration=0):
    """``(objective, metrics)`` at meta-iteration ``iteration``: the
    objective is the MSL-weighted sum of per-step query losses (or the last
    step's loss); ``metrics['loss']`` is always the last step's query loss,
    ``metrics['msl_loss']`` the objective. A traced ``iteration`` computes
    the weights on the device and selects the derivative order with a
    traced flag (:meth:`meta_grad` instead switches whole phases)."""
    if isinstance(iteration, (int, np.integer)):
      first_order, multi_step = self.phase(int(iteration))
      weights = self.loss_weights_at(int(iteration))
    else:
      epoch = iteration // self.iters_per_epoch
      first_order = (True if self.first_order else
                     False if self.first_order_epochs == 0 else
                     epoch < self.first_order_epochs)
      multi_step = self.multi_step_loss and self.inner_steps > 1
      weights = self.loss_weights_traced(iteration)
    return self.phase_loss(params, task, weights, first_order=first_order,
                           multi_step=multi_step)

  def meta_grad(self, params, tasks: Task, *, iteration=0, task_map="vmap",
                chunk_size=None):
    """The mean meta-gradient at ``iteration``; a traced ``iteration`` runs
    one ``lax.switch`` branch per phase around the whole task map."""
    if isinstance(iteration, (int, np.integer)):
      return super().meta_grad(params, tasks, iteration=int(iteration),
                               task_map=task_map, chunk_size=chunk_size)
    weights = self.loss_weights_traced(iteration)

    def branch(phase):
      first_order, multi_step = phase

      def task_grad(task):
        return jax.value_and_grad(
            lambda p: self.phase_loss(p, task, weights,
                                      first_order=first_order,
                                      multi_step=multi_step),
            has_aux=True)(params)

      return lambda: task_map_lib.mean_over_tasks(
          task_grad, tasks, method=task_map, chunk_size=chunk_size)

    branches = [branch(phase) for phase in self.phases()]
    if len(branches) == 1:
      return branches[0]()
    return jax.lax.switch(self.phase_index(iteration), branches)

  def query_metrics_after(self, params, trajectory, task: Task) -> dict:
    """Step ``t`` is scored with batch-norm row ``t - 1``."""
    del params
    steps = jax.tree_util.tree_leaves(trajectory)[0].shape[0]
    return jax.lax.map(
        lambda pt: self.metrics(
            self.apply(self.step_params(pt[0], pt[1]), task.query_x),
            task.query_y),
        (trajectory, jnp.arange(steps)))

  def initial_query_metrics(self, params, task: Task) -> dict:
    return self.metrics(
        self.apply(self.step_params(params["model"], 0), task.query_x),
        task.query_y)
