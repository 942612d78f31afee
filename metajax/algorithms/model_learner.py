"""The base of learners that adapt a flax model's weights: a model and a loss.

MAML (and MAML++), Reptile and iMAML all hold a flax ``model`` used through
``apply`` and a per-task ``loss``, report the same metrics (query ``loss``,
``accuracy`` for classification, ``pre_`` metrics before adaptation) and draw
the same adaptation curves. :class:`ModelLearner` holds exactly that and
nothing of any method's inner loop, so each method composes the inner loop
(:mod:`metajax.core.inner`) its own way: Reptile and iMAML are siblings of
MAML, not subclasses that switch half of it off.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.core import losses
from metajax.core.learner import BATCH_STATS, Learner
from metajax.core.tasks import Task
from metajax.models import MLP, Conv4
from metajax.models import layers

PRE_METRICS_ON = ("support", "query")
#: how evaluation feeds the query set to the model (see ``ModelLearner``).
EVAL_QUERY_CONTEXTS = ("batch", "support")


def model_example_ndim(model: nn.Module) -> int | None:
  """Rank of one input example ``model`` expects, ``None`` if unknown.

  A model may declare it as an ``example_ndim`` attribute; metajax's own
  models are known: :class:`~metajax.models.Conv4` takes ``(H, W, C)``
  images (3), :class:`~metajax.models.MLP` feature vectors (1).
  """
  declared = getattr(model, "example_ndim", None)
  if declared is not None:
    return int(declared)
  if isinstance(model, Conv4):
    return 3
  if isinstance(model, MLP):
    return 1
  return None


def init_running_stats(model: nn.Module, x) -> dict | None:
  """Initial running statistics (mean 0, variance 1) of ``model`` for inputs
  like ``x``, or ``None`` if it keeps none (shapes only; nothing runs)."""
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  stats = variables.get(layers.BATCH_STATS)
  if not stats:
    return None
  return layers.initial_running_stats(
      jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), stats))


def apply_model(model: nn.Module, model_params, x, running_stats=None, *,
                collect: bool = False):
  """``model``'s outputs on ``x``; with ``collect``, ``(outputs, batch
  statistics or None)``.

  With ``running_stats`` the model normalises with them (evaluation mode);
  otherwise with batch statistics, which ``collect`` returns for the running
  averages (``None`` for models that keep none).
  """
  variables = {"params": model_params}
  if running_stats is not None:
    variables[layers.BATCH_STATS] = running_stats
    out = model.apply(variables, x)
    return (out, None) if collect else out
  if not collect:
    return model.apply(variables, x)
  out, updated = model.apply(variables, x, mutable=[layers.BATCH_STATS])
  return out, (updated.get(layers.BATCH_STATS) or None)


@dataclasses.dataclass(frozen=True, eq=False)
class ModelLearner(Learner):
  """A flax model plus a per-task loss; subclasses define ``adapt``.

  Defaults: meta-parameters ``{'model': flax params}``, ``predict`` applies
  the adapted weights, ``task_loss`` is the query loss after ``adapt``.

  Attributes:
    model: a flax module ``x -> outputs`` (used through ``apply``).
    loss: ``'mse'``, ``'cross_entropy'`` or ``(outputs, targets) -> scalar``.
    pre_metrics_on: ``'support'`` (MAML's convention: loss before adaptation
      on the support set, nearly free) or ``'query'`` (one more forward pass).
    ways: classes per task (classification), checked against ``model``'s
      outputs and the labels.
    running_stats: batch-norm running statistics to normalise with (set by
      :meth:`with_model_state` for evaluation; ``None``: batch statistics).
    eval_query_context: how :meth:`evaluate` scores queries. ``'batch'``:
      all queries in one call (with batch statistics, transductive).
      ``'support'``: each query in a call of its own together with the
      support set, whose output for it is kept (openai/supervised-reptile's
      non-transductive evaluation, ``_test_predictions``: batch norm sees
      the support set and that one query).
  """
  model: nn.Module
  loss: str | Callable = "mse"
  pre_metrics_on: str = dataclasses.field(default="support", kw_only=True)
  ways: int | None = dataclasses.field(default=None, kw_only=True)
  running_stats: Any = dataclasses.field(default=None, kw_only=True,
                                         repr=False)
  eval_query_context: str = dataclasses.field(default="batch", kw_only=True)

  def __post_init__(self):
    if self.eval_query_context not in EVAL_QUERY_CONTEXTS:
      raise ValueError(
          f"eval_query_context must be one of {EVAL_QUERY_CONTEXTS}, got "
          f"{self.eval_query_context!r}")
    if self.pre_metrics_on not in PRE_METRICS_ON:
      raise ValueError(
          f"pre_metrics_on must be one of {PRE_METRICS_ON}, got "
          f"{self.pre_metrics_on!r}")
    losses.get(self.loss)  # an unknown loss name fails at construction

  @property
  def loss_fn(self) -> Callable:
    return losses.get(self.loss)

  @property
  def classification(self) -> bool:  # type: ignore[override]
    return self.loss == "cross_entropy" or self.loss is losses.cross_entropy

  @property
  def num_outputs(self):
    return getattr(self.model, "num_outputs", None)

  @property
  def example_ndim(self):
    return model_example_ndim(self.model)

  @property
  def target_dim(self):
    # Only an elementwise loss ties the targets' width to the outputs'; a
    # custom loss may read e.g. a mean and a scale per target dimension.
    if self.classification or self.loss != "mse":
      return None
    return self.num_outputs

  @property
  def default_eval_steps(self) -> int:
    """Inner steps of :meth:`evaluate` when none are given."""
    return 0

  # -- Learner defaults: meta-parameters are the model's, adapt -> weights --
  def init(self, rng, task: Task):
    return {"model": self.model.init(rng, task.support_x)["params"]}

  def predict(self, params, state, x):
    del params
    return self.apply(state, x)

  def task_loss(self, params, task: Task, *, iteration=0):
    """``(query loss after adaptation, metrics)`` with the ``pre_`` metrics
    of the unadapted model; methods without a schedule ignore
    ``iteration``. Under running batch-norm statistics the query pass's
    batch statistics are reported under ``'batch_stats'``."""
    del iteration
    adapted = self.adapt(params, task.support_x, task.support_y)
    metrics = self.query_metrics(adapted, task)
    metrics.update(self.pre_metrics(params["model"], task))
    return metrics["loss"], metrics

  # -- running statistics ----------------------------------------------------
  def init_model_state(self, params, task: Task):
    del params
    return init_running_stats(self.model, task.support_x)

  def with_model_state(self, model_state, *, training=False):
    # Training passes normalise with batch statistics (and report them).
    return (self if model_state is None or training
            else dataclasses.replace(self, running_stats=model_state))

  # -- helpers -------------------------------------------------------------
  def apply(self, model_params, x):
    """The model's outputs for inputs ``x`` under ``model_params``."""
    return apply_model(self.model, model_params, x, self.running_stats)

  def query_metrics(self, model_params, task: Task) -> dict:
    """Query metrics under ``model_params``, plus the pass's batch
    statistics (``'batch_stats'``) when the model keeps running ones."""
    out, stats = apply_model(self.model, model_params, task.query_x,
                             self.running_stats, collect=True)
    metrics = self.metrics(out, task.query_y)
    if stats is not None:
      metrics[BATCH_STATS] = stats
    return metrics

  def support_loss(self, model_params, x, y):
    return self.loss_fn(self.apply(model_params, x), y)

  def metrics(self, outputs, y, prefix=""):
    m = {prefix + "loss": self.loss_fn(outputs, y)}
    if self.classification:
      m[prefix + "accuracy"] = losses.accuracy(outputs, y)
    return m

  def pre_metrics(self, model_params, task: Task) -> dict:
    """``pre_loss`` (and ``pre_accuracy``) of the unadapted model, without
    gradient, on the set named by ``pre_metrics_on``."""
    x, y = ((task.support_x, task.support_y) if self.pre_metrics_on == "support"
            else (task.query_x, task.query_y))
    return jax.lax.stop_gradient(self.metrics(
        self.apply(jax.lax.stop_gradient(model_params), x), y, prefix="pre_"))

  def eval_outputs(self, model_params, task: Task):
    """Query outputs for evaluation under :attr:`eval_query_context`."""
    if self.eval_query_context == "batch":
      return self.apply(model_params, task.query_x)

    def one(q):
      x = jnp.concatenate([task.support_x, q[None]], 0)
      return self.apply(model_params, x)[-1]

    return jax.vmap(one)(task.query_x)

  def query_metrics_after(self, params, trajectory, task: Task) -> dict:
    """Query metrics of each point of ``trajectory`` (a leading step axis);
    subclasses with per-step model parameters override this."""
    del params
    return jax.lax.map(
        lambda p: self.metrics(self.eval_outputs(p, task), task.query_y),
        trajectory)

  def initial_query_metrics(self, params, task: Task) -> dict:
    return self.metrics(self.eval_outputs(params["model"], task),
                        task.query_y)

  def evaluate(self, params, task: Task, *, steps=None):
    """Query metrics after 0, 1, ..., ``steps`` inner steps.

    Returns a dict of arrays of length ``steps + 1`` (``loss`` and, for
    classification, ``accuracy``); ``steps`` defaults to
    :attr:`default_eval_steps`.
    """
    steps = self.default_eval_steps if steps is None else steps
    first = self.initial_query_metrics(params, task)
    if not steps:
      return jax.tree_util.tree_map(lambda a: a[None], first)
    _, trajectory = self.adapt(params, task.support_x, task.support_y,
                               steps=steps, return_trajectory=True)
    per_step = self.query_metrics_after(params, trajectory, task)
    return jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a[None], b]), first, per_step)
