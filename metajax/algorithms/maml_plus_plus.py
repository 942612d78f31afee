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

The annealed quantities depend on the meta-iteration, which the generic
``learner.task_grad(params, task)`` cannot see. Two ways to supply it:

* :meth:`MAMLPlusPlus.with_iteration` returns a copy for iteration ``i``;
  its schedule is a compile-time constant, so a step built from it with
  :func:`metajax.make_meta_step` is re-compiled for every copy (fine for
  single checks, wasteful for training);
* :func:`make_meta_step` (this module) reads the iteration from
  ``state.step`` and compiles one step per *phase* (first/second order x
  multi-step/last-step loss: at most three compiles over a run). The MSL
  weights, which change every epoch, are passed to the compiled step as an
  array argument, so they never trigger a re-compile. The host only reads
  ``state.step`` once; afterwards it counts, so the loop never waits on the
  device. Its ``.jitted`` attribute is a single compiled step for loops that
  stay on the device (``lax.scan`` over steps): the weights are computed
  from the traced ``state.step`` and the derivative order is a
  ``lax.cond`` (both orders compiled into one program).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax.core import inner
from metajax.core import learner as learner_lib
from metajax.core import masks as masks_lib
from metajax.core import task_map as task_map_lib
from metajax.algorithms.maml import MAML
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


# The authors' released configurations (HowToTrainYourMAMLPytorch,
# experiment_config/): Omniglot from omniglot_maml++-omniglot_1_8_0.1_64_{5,20}_0,
# mini-ImageNet from mini-imagenet_maml++_mini-imagenet_5_way_{1,5}_shot_0.
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "omniglot_5way_1shot": dict(loss="cross_entropy", inner_steps=5,
                                inner_lr=0.1, msl_epochs=10,
                                first_order_epochs=0, iters_per_epoch=500),
    "omniglot_20way_1shot": dict(loss="cross_entropy", inner_steps=5,
                                 inner_lr=0.1, msl_epochs=10,
                                 first_order_epochs=0, iters_per_epoch=500),
    "miniimagenet_5way_1shot": dict(loss="cross_entropy", inner_steps=5,
                                    inner_lr=0.01, msl_epochs=15,
                                    first_order_epochs=11, iters_per_epoch=500),
    "miniimagenet_5way_5shot": dict(loss="cross_entropy", inner_steps=5,
                                    inner_lr=0.01, msl_epochs=15,
                                    first_order_epochs=11, iters_per_epoch=500),
}
# Outer loop of the same configs. ``filters``: Conv4 width; ``clip``: the
# element-wise gradient clamp the authors apply on mini-ImageNet. (The
# released mini-ImageNet configs set min_lr = meta_lr, i.e. no decay.)
PAPER_OUTER: dict[str, dict[str, Any]] = {
    "omniglot_5way_1shot": dict(meta_lr=1e-3, min_lr=1e-5, total_epochs=100,
                                meta_batch=8, filters=64, clip=None),
    "omniglot_20way_1shot": dict(meta_lr=1e-3, min_lr=1e-5, total_epochs=100,
                                 meta_batch=8, filters=64, clip=None),
    "miniimagenet_5way_1shot": dict(meta_lr=1e-3, min_lr=1e-3,
                                    total_epochs=100, meta_batch=4, filters=48,
                                    clip=10.0),
    "miniimagenet_5way_5shot": dict(meta_lr=1e-3, min_lr=1e-3,
                                    total_epochs=100, meta_batch=2, filters=48,
                                    clip=10.0),
}


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
    iteration: the current meta-iteration (see :meth:`with_iteration`).
    loss_weights: explicit ``(K,)`` MSL weights overriding the schedule
      (may be a traced array; :func:`make_meta_step` uses this).
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
  iteration: int = 0
  loss_weights: Any = None

  PAPER_DEFAULTS: ClassVar[dict] = PAPER_DEFAULTS
  PAPER_OUTER: ClassVar[dict] = PAPER_OUTER

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
    if not isinstance(self.iteration, (int, np.integer)) or self.iteration < 0:
      raise ValueError(
          f"iteration must be a non-negative int, got {self.iteration!r}")
    if self.per_step_bn and self.adapt_bn:
      raise ValueError(
          "per_step_bn requires adapt_bn=False: per-step batch-norm weights "
          "are meta-learned, not adapted (MAML++'s BNWB)")
    if self.loss_weights is not None:
      shape = np.shape(self.loss_weights)
      if shape != (self.inner_steps,):
        raise ValueError(
            f"loss_weights must have shape ({self.inner_steps},), got {shape}")

  @classmethod
  def paper(cls, model, setting: str = "miniimagenet_5way_1shot", **overrides):
    """MAML++ with the authors' hyperparameters for ``setting``."""
    if setting not in PAPER_DEFAULTS:
      raise ValueError(
          f"unknown paper setting {setting!r}; choose one of "
          f"{sorted(PAPER_DEFAULTS)}")
    return cls(model=model, **{**PAPER_DEFAULTS[setting], **overrides})

  @staticmethod
  def outer_optimizer(setting: str | None = None, *, meta_lr: float = 1e-3,
                      min_lr: float = 1e-5, total_epochs: int = 100,
                      iters_per_epoch: int = 500,
                      clip: float | None = None) -> optax.GradientTransformation:
    """Adam with the per-epoch cosine schedule (CA).

    ``lr(i) = min_lr + (meta_lr - min_lr) (1 + cos(pi e / total_epochs)) / 2``
    with ``e = i // iters_per_epoch`` (torch's ``CosineAnnealingLR`` stepped
    once per epoch), after an element-wise clip to ``[-clip, clip]`` if
    given. With a ``setting`` the authors' values (``PAPER_OUTER``) are used.
    """
    if setting is not None:
      if setting not in PAPER_OUTER:
        raise ValueError(
            f"unknown paper setting {setting!r}; choose one of "
            f"{sorted(PAPER_OUTER)}")
      o = PAPER_OUTER[setting]
      meta_lr, min_lr, total_epochs, clip = (
          o["meta_lr"], o["min_lr"], o["total_epochs"], o["clip"])
      iters_per_epoch = PAPER_DEFAULTS[setting]["iters_per_epoch"]
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
    """``(first_order, multi_step_loss)`` at ``iteration``: what a compiled
    step depends on statically."""
    return self.first_order_at(iteration), self.msl_active_at(iteration)

  def with_iteration(self, iteration: int) -> "MAMLPlusPlus":
    """A copy for meta-iteration ``iteration`` (schedules follow it)."""
    return dataclasses.replace(self, iteration=int(iteration),
                               loss_weights=None)

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
            return_trajectory=False):
    """Adapted model parameters after ``steps`` (default ``K``) steps.

    Beyond ``K`` steps (meta-test) the last step's rates and batch-norm
    weights are reused.
    """
    steps = self.inner_steps if steps is None else steps
    lr = params.get("inner_lr", self.inner_lr)
    per_step = self.learn_inner_lr == "per_step_per_tensor"
    if per_step and steps > self.inner_steps:
      extra = steps - self.inner_steps
      lr = jax.tree_util.tree_map(
          lambda l: jnp.concatenate([l, jnp.repeat(l[-1:], extra)]), lr)

    def loss_fn(p, t):
      return self.support_loss(self.step_params(p, t), support_x, support_y)

    return inner.adapt(
        loss_fn, params["model"], steps=steps, lr=lr,
        mask=self._inner_mask(params["model"]),
        first_order=self.first_order_at(self.iteration),
        per_step_lr=per_step, unroll=self.unroll, remat=self.remat,
        return_trajectory=return_trajectory, step_loss=True)

  def predict(self, params, state, x):
    del params
    return self.apply(self.step_params(state, self.inner_steps - 1), x)

  def task_loss(self, params, task: Task):
    """``(objective, metrics)``: the objective is the MSL-weighted sum of
    per-step query losses (or the last step's loss); ``metrics['loss']`` is
    always the last step's query loss, ``metrics['msl_loss']`` the
    objective."""
    k = self.inner_steps
    qx, qy = task.query_x, task.query_y
    if self.msl_active_at(self.iteration):
      w = (self.loss_weights if self.loss_weights is not None
           else self.loss_weights_at(self.iteration))
      _, traj = self.adapt(params, task.support_x, task.support_y,
                           return_trajectory=True)
      outs = [self.apply(self.step_params(
          jax.tree_util.tree_map(lambda a: a[t], traj), t), qx)
              for t in range(k)]
      objective = sum(w[t] * self.loss_fn(outs[t], qy) for t in range(k))
      final = outs[-1]
    else:
      adapted = self.adapt(params, task.support_x, task.support_y)
      final = self.predict(params, adapted, qx)
      objective = self.loss_fn(final, qy)
    metrics = self.metrics(final, qy)
    metrics["msl_loss"] = jax.lax.stop_gradient(objective)
    x, y = ((task.support_x, task.support_y) if self.pre_metrics_on == "support"
            else (task.query_x, task.query_y))
    theta0 = self.step_params(jax.lax.stop_gradient(params["model"]), 0)
    metrics.update(jax.lax.stop_gradient(
        self.metrics(self.apply(theta0, x), y, prefix="pre_")))
    return objective, metrics

  def evaluate(self, params, task: Task, *, steps=None):
    """Query metrics after 0, 1, ..., ``steps`` inner steps (arrays of length
    ``steps + 1``; step ``t`` is scored with batch-norm row ``t - 1``)."""
    steps = (self.eval_inner_steps or self.inner_steps) if steps is None else steps
    qx, qy = task.query_x, task.query_y
    pre = self.metrics(self.apply(self.step_params(params["model"], 0), qx), qy)
    if not steps:
      return jax.tree_util.tree_map(lambda a: a[None], pre)
    _, traj = self.adapt(params, task.support_x, task.support_y, steps=steps,
                         return_trajectory=True)
    per_step = jax.lax.map(
        lambda pt: self.metrics(
            self.apply(self.step_params(pt[0], pt[1]), qx), qy),
        (traj, jnp.arange(steps)))
    return jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a[None], b]), pre, per_step)


def make_meta_step(learner: MAMLPlusPlus,
                   optimizer: optax.GradientTransformation, *,
                   task_map: str = "vmap", chunk_size: int | None = None,
                   check: bool = True, donate: bool = False):
  """A MAML++ meta-step whose schedules follow ``state.step``.

  Same contract as :func:`metajax.make_meta_step` (``step(state, tasks) ->
  (state, metrics)``), but the iteration used by MSL and DA is
  ``state.step`` instead of ``learner.iteration``.

  The returned ``step`` compiles one function per phase
  (:meth:`MAMLPlusPlus.phase`, at most three over a run) and passes the MSL
  weights as an array argument; ``step.phases`` holds them by phase.

  ``step.jitted`` is the fully on-device alternative for loops that keep
  the state on the device (e.g. ``lax.scan`` over steps): one compiled
  function that computes the weights from the traced ``state.step``
  (:meth:`MAMLPlusPlus.loss_weights_traced`) and picks first or second
  order with ``lax.cond`` (both compiled in; it always takes the multi-step
  path, whose weights become ``(0, ..., 0, 1)`` after ``msl_epochs``). The
  two give the same updates.
  """
  if not isinstance(learner, MAMLPlusPlus):
    raise ValueError(
        f"expected a MAMLPlusPlus learner, got {type(learner).__name__}; use "
        "metajax.make_meta_step for other learners")
  if task_map not in task_map_lib.METHODS:
    raise ValueError(
        f"unknown task mapping {task_map!r}; choose one of "
        f"{task_map_lib.METHODS}")
  compiled: dict[tuple[bool, bool], Callable] = {}
  host = {"step": None, "iteration": None}
  donate_argnums = (0,) if donate else ()

  def update(lrn, state, tasks):
    (_, metrics), grads = lrn.meta_grad(
        state.params, tasks, task_map=task_map, chunk_size=chunk_size)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return learner_lib.MetaState(params, opt_state, state.step + 1), metrics

  def build(iteration):
    phase_learner = learner.with_iteration(iteration)

    def step(state, tasks, weights):
      return update(dataclasses.replace(phase_learner, loss_weights=weights),
                    state, tasks)

    return jax.jit(step, donate_argnums=donate_argnums)

  def meta_step(state: learner_lib.MetaState, tasks: Task):
    if check:
      learner.check(tasks)
    # The iteration is counted on the host while the caller feeds back the
    # state we returned; any other state is read once from the device.
    if host["step"] is not None and state.step is host["step"]:
      iteration = host["iteration"]
    else:
      iteration = int(state.step)
    phase = learner.phase(iteration)
    if phase not in compiled:
      compiled[phase] = build(iteration)
    weights = jnp.asarray(learner.loss_weights_at(iteration),
                          jnp.result_type(float))
    new_state, metrics = compiled[phase](state, tasks, weights)
    host["step"], host["iteration"] = new_state.step, iteration + 1
    return new_state, metrics

  # -- the traced variant ------------------------------------------------
  # Iteration 0 selects the multi-step path whenever MSL is used at all;
  # the weights then come from the traced schedule.
  base = learner.with_iteration(0)
  first = dataclasses.replace(base, first_order=True)
  second = dataclasses.replace(base, first_order=False, first_order_epochs=0)

  def traced_step(state: learner_lib.MetaState, tasks: Task):
    weights = learner.loss_weights_traced(state.step)
    branches = [lambda s, t, lrn=lrn: update(
        dataclasses.replace(lrn, loss_weights=weights), s, t)
                for lrn in (second, first)]
    if learner.first_order:
      return branches[1](state, tasks)
    if learner.first_order_epochs == 0:
      return branches[0](state, tasks)
    use_first = state.step // learner.iters_per_epoch < learner.first_order_epochs
    return jax.lax.cond(use_first, branches[1], branches[0], state, tasks)

  meta_step.phases = compiled
  meta_step.traced = traced_step
  meta_step.jitted = jax.jit(traced_step, donate_argnums=donate_argnums)
  return meta_step
