"""The learner contract and the one compiled meta-training step.

Every meta-learner in metajax (MAML and its variants, Reptile, iMAML,
ProtoNets, ...) implements :class:`Learner`:

* ``init(rng, task)``: meta-parameters (a pytree) for tasks shaped like
  ``task`` (one task, no task axis);
* ``adapt(params, support_x, support_y, steps=None)``: task-specific state
  (adapted weights, prototypes, a ridge head, ...);
* ``predict(params, state, x)``: outputs on query inputs;
* ``task_loss(params, task, iteration=0)``: ``(query loss, metrics)`` of one
  task;
* ``task_grad(params, task, iteration=0)``: ``((loss, metrics),
  meta-gradient)`` of one task; autodiff of ``task_loss`` by default,
  overridden where the method has its own update (Reptile) or gradient
  (iMAML);
* ``meta_grad(params, tasks, iteration=0, ...)``: the mean of ``task_grad``
  over a batch of tasks;
* ``evaluate(params, task, steps)``: query metrics of one task (curves over
  inner steps where that applies).

Outer state is explicit, as in optax and learned_optimization: a learner
object holds only constants.

Batch norm with running statistics (``norm='running'`` in
:mod:`metajax.models.layers`) is the one piece of state that is neither a
meta-parameter nor optimiser state: running averages of the batch
statistics of each training forward pass. It lives in
``MetaState.model_state`` (``None`` for every other model), as does any
other state a learner carries from task to task outside the meta-parameters
(Reptile's inner Adam moments in the official code). A learner reports
what its training passes produced for the state in its metrics (batch
statistics under :data:`BATCH_STATS`, averaged over the meta-batch like
any metric); :func:`make_meta_step` runs the meta-gradient with
``learner.with_model_state(state.model_state, training=True)`` and hands
the metrics to :meth:`Learner.update_model_state`, which folds the reports
into ``model_state`` and removes them. Evaluation uses
``learner.with_model_state(state.model_state)``, a learner whose model
normalises with the running averages (PyTorch's ``eval()``). Whatever changes over meta-training is either a
meta-parameter (learned inner rates, in ``params``), optimiser state (an
annealed outer step size, in ``opt_state``), or a function of the
meta-iteration ``iteration`` that :func:`make_meta_step` passes in from
``state.step`` (MAML++'s annealed multi-step-loss weights and derivative
order). ``iteration`` is a traced ``int32`` inside the compiled step and a
Python ``int`` in a direct call; learners with no schedule ignore it.

:func:`make_meta_step` turns any learner and an optax optimiser into one
``jit``-compiled meta-step: ``meta_grad`` at ``iteration = state.step``,
then the optimiser update. :func:`metajax.training.fit` runs the same step
inside ``lax.scan``; no learner has a step function of its own.
"""
from __future__ import annotations

import abc
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metajax.core import sharding as sharding_lib
from metajax.core import task_map as task_map_lib
from metajax.core.tasks import Task, check_tasks

Params = Any
Metrics = dict
#: the metrics key under which a training forward pass reports its batch
#: statistics (``norm='running'``); :func:`make_meta_step` consumes it.
BATCH_STATS = "batch_stats"


class Learner(abc.ABC):
  """Base class of meta-learners; see the module docstring for the contract."""

  #: whether targets are class ids (accuracy is reported) or real values.
  classification: bool = True
  #: number of classes per task the learner is built for (None: any).
  ways: int | None = None

  @abc.abstractmethod
  def init(self, rng: jax.Array, task: Task) -> Params:
    """Meta-parameters for tasks shaped like ``task`` (no task axis)."""

  @abc.abstractmethod
  def adapt(self, params: Params, support_x, support_y, *, steps=None):
    """Task-specific state from one task's support set."""

  @abc.abstractmethod
  def predict(self, params: Params, state: Any, x) -> jax.Array:
    """Outputs on inputs ``x`` given the adapted ``state``."""

  @abc.abstractmethod
  def task_loss(self, params: Params, task: Task, *, iteration=0
                ) -> tuple[jax.Array, Metrics]:
    """``(query loss, metrics)`` of one task (differentiable in ``params``)
    at meta-iteration ``iteration``."""

  def task_grad(self, params: Params, task: Task, *, iteration=0):
    """``((loss, metrics), grads)`` for one task: autodiff of ``task_loss``."""
    return jax.value_and_grad(
        lambda p: self.task_loss(p, task, iteration=iteration),
        has_aux=True)(params)

  def evaluate(self, params: Params, task: Task, *, steps=None) -> Metrics:
    """Query metrics of one task after adaptation."""
    _, metrics = self.task_loss(params, task)
    return metrics

  def check(self, tasks: Task, *, batched: bool = True) -> Task:
    """Boundary check of a task batch (``ValueError`` naming the problem).

    Labels are checked against ``ways``, or the model's outputs when
    ``ways`` is None, for numpy and jax arrays alike (see
    :func:`check_tasks` for what the jax-array check costs).
    """
    return check_tasks(tasks, batched=batched,
                       classification=self.classification, ways=self.ways,
                       num_outputs=self.num_outputs,
                       example_ndim=self.example_ndim,
                       target_dim=self.target_dim)

  @property
  def num_outputs(self) -> int | None:
    """The model's number of outputs (classes), ``None`` if unknown."""
    return None

  @property
  def example_ndim(self) -> int | None:
    """Rank of one input example (3 for ``(H, W, C)``), ``None`` if unknown:
    lets :meth:`check` name a task passed without its task axis."""
    return None

  @property
  def target_dim(self) -> int | None:
    """Regression: the size of the targets' last axis, ``None`` if unknown:
    lets :meth:`check` catch targets that would broadcast in the loss."""
    return None

  # -- running statistics (batch norm in train/eval mode) -------------------
  #: weight of a new batch in the running averages (PyTorch's ``momentum``).
  running_momentum: float = 0.1

  def init_model_state(self, params: Params, task: Task) -> Any:
    """Initial non-parameter model state (running batch-norm statistics) for
    tasks shaped like ``task``; ``None`` for models without any."""
    del params, task
    return None

  def update_model_state(self, model_state: Any, metrics: Metrics
                         ) -> tuple[Any, Metrics]:
    """``(model_state, metrics)`` after one meta-step whose task-averaged
    ``metrics`` carry what the training passes reported for the state
    (:data:`BATCH_STATS`): the reports are folded into ``model_state`` and
    removed from the metrics. Batch statistics enter an exponential moving
    average with weight :attr:`running_momentum`; learners with other state
    (Reptile's persistent inner Adam moments) override this."""
    metrics = dict(metrics)
    batch_stats = metrics.pop(BATCH_STATS, None)
    if model_state is None or batch_stats is None:
      return model_state, metrics
    m = self.running_momentum
    return jax.tree_util.tree_map(
        lambda r, b: (1.0 - m) * r + m * b.astype(r.dtype), model_state,
        batch_stats), metrics

  def with_model_state(self, model_state: Any, *, training: bool = False
                       ) -> "Learner":
    """The learner that uses ``model_state``: for evaluation (default), a
    learner whose model normalises with the running statistics instead of
    batch statistics; with ``training=True`` the learner one meta-step runs
    (batch norm keeps batch statistics; state a training pass reads, such as
    Reptile's persistent inner Adam moments, is bound). Learners without
    model state return themselves."""
    del model_state, training
    return self

  def meta_grad(self, params: Params, tasks: Task, *, iteration=0,
                task_map: str = "vmap", chunk_size: int | None = None):
    """Mean over tasks of ``task_grad``: ``((loss, metrics), grads)``."""
    return task_map_lib.mean_over_tasks(
        lambda t: self.task_grad(params, t, iteration=iteration), tasks,
        method=task_map, chunk_size=chunk_size)


class MetaState(NamedTuple):
  """Meta-training state: meta-parameters, optimiser state, step count and
  the model's running statistics (``None`` unless its batch norm keeps
  them; see the module docstring)."""
  params: Params
  opt_state: Any
  step: jax.Array
  model_state: Any = None


def init_state(learner: Learner, optimizer: optax.GradientTransformation,
               rng: jax.Array, task: Task) -> MetaState:
  """Initial :class:`MetaState` for tasks shaped like ``task`` (one task)."""
  params = learner.init(rng, task)
  return MetaState(params, optimizer.init(params), jnp.zeros((), jnp.int32),
                   learner.init_model_state(params, task))


def make_meta_step(learner: Learner, optimizer: optax.GradientTransformation,
                   *, task_map: str = "vmap", chunk_size: int | None = None,
                   check: bool = True, donate: bool = False,
                   devices: sharding_lib.Devices = None
                   ) -> Callable[[MetaState, Task], tuple[MetaState, Metrics]]:
  """One compiled meta-step: mapped meta-gradient plus optimiser update.

  Args:
    learner: any :class:`Learner`.
    optimizer: the outer optax optimiser (e.g. ``optax.adam(1e-3)``).
    task_map: how tasks are mapped, see :mod:`metajax.core.task_map`.
    chunk_size: tasks per chunk for ``task_map='map'``.
    check: validate each task batch's shapes and dtypes on the host before
      running (cheap; catches bad input with a clear ``ValueError``).
    donate: donate the state buffers to the step (saves memory on
      accelerators; the passed-in state must not be used afterwards).
    devices: shard each task batch over these devices (``None``: one
      device; an integer ``n``: the first ``n`` devices; ``'all'``; or a
      sequence of devices): each device maps its share of the tasks with
      ``task_map`` and the per-device means are averaged across devices
      (:mod:`metajax.core.sharding`). The meta-batch must split evenly.

  Every learner goes through this one function: the meta-iteration
  ``state.step`` is passed to ``learner.meta_grad``, so schedules (MAML++)
  follow the state, and a resumed state continues them exactly.

  Returns:
    ``step(state, tasks) -> (state, metrics)``, where ``tasks`` is a
    :class:`~metajax.Task` with a leading task axis and ``metrics`` holds the
    task-averaged ``loss`` (query, after adaptation), ``pre_loss`` and, for
    classification, ``accuracy`` / ``pre_accuracy`` (batch statistics
    reported under :data:`BATCH_STATS` go into ``state.model_state``
    instead).
  """
  if task_map not in task_map_lib.METHODS:
    raise ValueError(
        f"unknown task mapping {task_map!r}; choose one of "
        f"{task_map_lib.METHODS}")

  mesh = sharding_lib.task_mesh(devices)

  def meta_grad(params, model_state, iteration, tasks):
    bound = learner.with_model_state(model_state, training=True)
    return bound.meta_grad(params, tasks, iteration=iteration,
                           task_map=task_map, chunk_size=chunk_size)

  if mesh is not None:
    meta_grad = sharding_lib.mean_over_devices(meta_grad, mesh,
                                               num_replicated=3)

  def step(state: MetaState, tasks: Task):
    (_, metrics), grads = meta_grad(state.params, state.model_state,
                                    state.step, tasks)
    model_state, metrics = learner.update_model_state(state.model_state,
                                                      metrics)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return MetaState(params, opt_state, state.step + 1, model_state), metrics

  jitted = jax.jit(step, donate_argnums=(0,) if donate else ())

  def checked_step(state: MetaState, tasks: Task):
    if check:
      learner.check(tasks)
      sharding_lib.check_divisible(tasks.num_tasks, mesh)
    return jitted(state, tasks)

  checked_step.jitted = jitted
  return checked_step
