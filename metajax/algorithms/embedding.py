"""The embedding-learner base: a backbone plus a head fitted on its features.

:class:`EmbeddingLearner` is the base shared with the other metric and
closed-form learners (:mod:`metajax.algorithms.matching`, :mod:`metajax.algorithms.r2d2`,
:mod:`metajax.algorithms.metaoptnet`): a backbone used through ``apply`` plus a head
fitted on the support embeddings.

Ways and shots. Logits have a static width ``ways`` (default: the support
size ``S``, an upper bound on the classes of any task); classes with no
support example get ``-inf`` logits, i.e. probability 0. One learner
therefore trains 60-way and tests 5-way (``ways=60``), and unbalanced shots
work; labels only have to be class ids in ``[0, ways)``.

Batch norm and the embedding policy. The backbone's batch norm is
transductive per call (:mod:`metajax.models.layers`): every ``apply``
normalises with the statistics of the batch it is given. ``embedding``
chooses what one call sees:

* ``'joint'``: support and query of a task go through the backbone in one
  call (one set of statistics), as in the PyTorch ProtoNet reference
  (jakesnell/prototypical-networks concatenates ``xs`` and ``xq``) and in
  R2-D2's code. Query statistics then influence the support embeddings, and
  :meth:`EmbeddingLearner.predict` re-embeds the support set together with
  every query batch it is given.
* ``'separate'``: support and query are embedded in separate calls (as in
  MetaOptNet's code): the head is fitted once in :meth:`adapt` and reused
  for any query batch.

With ``norm='none'`` in the backbone the two policies agree exactly.
Under ``norm='running'`` (ProtoNets' PyTorch ``train()``/``eval()``),
training normalises each call with its batch's statistics and reports them
for the running averages; evaluation (:meth:`EmbeddingLearner.with_model_state`)
normalises every example with the running averages, so the two policies
agree there too.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metajax.algorithms.model_learner import (apply_model, init_running_stats,
                                              model_example_ndim)
from metajax.core import losses
from metajax.core.learner import BATCH_STATS, Learner
from metajax.core.tasks import Task, check_tasks
from metajax.models import Conv4

EMBEDDINGS = ("joint", "separate")


def default_backbone() -> nn.Module:
  """``metajax.models.Conv4(num_outputs=None)``: the 64-filter feature net."""
  return Conv4(num_outputs=None)


class HeadState(NamedTuple):
  """What :meth:`EmbeddingLearner.adapt` returns for one task.

  Attributes:
    support_x: ``(S, *x_shape)`` support inputs (needed to re-embed them with
      each query batch under ``embedding='joint'``).
    support_y: ``(S,)`` integer support labels.
    head: the fitted head (prototypes, ridge weights, SVM dual, ...), or
      ``None`` under ``embedding='joint'``, where it depends on the query
      batch through the batch-norm statistics and is fitted in ``predict``.
  """
  support_x: Any
  support_y: Any
  head: Any


def class_counts(labels: jax.Array, num_classes: int) -> jax.Array:
  """``(C,)`` number of support examples of each class (float)."""
  return jnp.sum(jax.nn.one_hot(labels, num_classes), axis=0)


def mask_absent(logits: jax.Array, counts: jax.Array) -> jax.Array:
  """Logits ``(Q, C)``, ``-inf`` in the columns of classes without support."""
  return jnp.where(counts > 0, logits, -jnp.inf)


def smoothed_cross_entropy(logits: jax.Array, labels: jax.Array,
                           smoothing: float = 0.0) -> jax.Array:
  """Mean cross-entropy against label-smoothed targets.

  The true class gets ``1 - smoothing`` and the other *present* classes
  (finite logits) share ``smoothing`` equally, as in MetaOptNet's training
  loss (``eps / (ways - 1)`` per wrong class). ``smoothing=0`` is the plain
  cross-entropy.
  """
  if smoothing == 0.0:
    return losses.cross_entropy(logits, labels)
  present = jnp.isfinite(logits)
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  others = jnp.maximum(jnp.sum(present, -1, keepdims=True) - 1, 1)
  target = onehot * (1.0 - smoothing) + (present & (onehot == 0)) * (
      smoothing / others)
  logp = jax.nn.log_softmax(logits, axis=-1)
  # where, not product: 0 * -inf is NaN for absent classes.
  return -jnp.mean(jnp.sum(jnp.where(present, target * logp, 0.0), -1))


@dataclasses.dataclass(frozen=True, eq=False)
class EmbeddingLearner(Learner):
  """Base of learners made of a backbone and a head fitted on its features.

  Subclasses implement :meth:`fit_head` (support features -> head) and
  :meth:`head_logits` (head, query features -> logits), and may add
  meta-parameters in :meth:`init_head`. Meta-parameters are
  ``{'model': backbone params, **head params}``.

  Attributes:
    model: flax backbone ``x -> (N, D)`` features, used through ``apply``.
    embedding: ``'joint'`` or ``'separate'`` (see the module docstring).
    ways: static logits width (classes per task, at most); ``None`` uses the
      support-set size. Classes absent from a task's support set get
      ``-inf`` logits.
    running_stats: batch-norm running statistics to normalise with (set by
      :meth:`with_model_state` for evaluation; ``None``: batch statistics).
  """
  model: nn.Module = dataclasses.field(default_factory=default_backbone)
  embedding: str = "joint"
  ways: int | None = None
  running_stats: Any = dataclasses.field(default=None, kw_only=True,
                                         repr=False)

  classification = True

  def __post_init__(self):
    if self.embedding not in EMBEDDINGS:
      raise ValueError(
          f"unknown embedding policy {self.embedding!r}; choose one of "
          f"{EMBEDDINGS}")
    if self.ways is not None and self.ways < 1:
      raise ValueError(f"ways must be at least 1, got {self.ways}")

  # -- hooks ---------------------------------------------------------------
  def init_head(self, rng: jax.Array, features: jax.Array) -> dict:
    """Head meta-parameters given ``(S, D)`` support features (none here)."""
    del rng, features
    return {}

  @abc.abstractmethod
  def fit_head(self, params, features, labels, num_classes: int, *,
               training: bool = True):
    """The task's head from ``(S, D)`` support features and labels."""

  @abc.abstractmethod
  def head_logits(self, params, head, features) -> jax.Array:
    """``(Q, C)`` logits of ``(Q, D)`` query features under ``head``."""

  def train_loss(self, logits, labels) -> jax.Array:
    """The meta-training loss (cross-entropy unless overridden)."""
    return losses.cross_entropy(logits, labels)

  # -- helpers -------------------------------------------------------------
  def num_classes(self, support_y) -> int:
    return self.ways if self.ways is not None else int(np.shape(support_y)[0])

  def apply(self, model_params, x, *, collect: bool = False):
    """Backbone features ``(N, D)`` of inputs ``x`` (with ``collect``:
    ``(features, batch statistics or None)``)."""
    f, stats = apply_model(self.model, model_params, x, self.running_stats,
                           collect=True)
    if f.ndim != 2:
      raise ValueError(
          f"the backbone must return (N, features), got shape {f.shape}; use "
          "e.g. Conv4(num_outputs=None)")
    return (f, stats) if collect else f

  def embed(self, model_params, support_x, query_x, *, collect: bool = False):
    """``(support features, query features)`` under the embedding policy
    (with ``collect``, plus the batch statistics of the call(s), averaged
    over the two calls under ``'separate'``)."""
    if self.embedding == "joint":
      s = support_x.shape[0]
      f, stats = self.apply(model_params,
                            jnp.concatenate([support_x, query_x], 0),
                            collect=True)
      out = f[:s], f[s:]
    else:
      (fs, ss), (fq, sq) = (self.apply(model_params, support_x, collect=True),
                            self.apply(model_params, query_x, collect=True))
      out = fs, fq
      stats = (None if ss is None else jax.tree_util.tree_map(
          lambda a, b: (a + b) / 2, ss, sq))
    return (*out, stats) if collect else out

  def logits(self, params, support_x, support_y, query_x, *,
             training: bool = True, collect: bool = False):
    """``(Q, C)`` query logits of one task (with ``collect``: ``(logits,
    batch statistics or None)``)."""
    fs, fq, stats = self.embed(params["model"], support_x, query_x,
                               collect=True)
    head = self.fit_head(params, fs, support_y, self.num_classes(support_y),
                         training=training)
    logits = self.head_logits(params, head, fq)
    return (logits, stats) if collect else logits

  # -- running statistics ----------------------------------------------------
  def init_model_state(self, params, task: Task):
    del params
    x = task.support_x
    if self.embedding == "joint":
      x = jnp.concatenate([task.support_x, task.query_x], 0)
    return init_running_stats(self.model, x)

  def with_model_state(self, model_state, *, training=False):
    # Training passes normalise with batch statistics (and report them).
    return (self if model_state is None or training
            else dataclasses.replace(self, running_stats=model_state))

  # -- Learner -------------------------------------------------------------
  def init(self, rng, task: Task):
    # One compiled call: initialising a conv backbone op by op (eagerly)
    # costs several times the compile time of the whole function.
    return jax.jit(self._init)(rng, task)

  def _init(self, rng, task: Task):
    k_model, k_head = jax.random.split(rng)
    x = task.support_x
    if self.embedding == "joint":
      x = jnp.concatenate([task.support_x, task.query_x], 0)
    params = {"model": self.model.init(k_model, x)["params"]}
    fs = self.apply(params["model"], task.support_x)
    params.update(self.init_head(k_head, fs))
    return params

  def adapt(self, params, support_x, support_y, *, steps=None):
    """:class:`HeadState` of one task (``steps`` is ignored: no inner loop)."""
    del steps
    head = None
    if self.embedding == "separate":
      fs = self.apply(params["model"], support_x)
      head = self.fit_head(params, fs, support_y, self.num_classes(support_y),
                           training=False)
    return HeadState(support_x, support_y, head)

  def predict(self, params, state: HeadState, x):
    """``(N, C)`` logits of inputs ``x`` (``-inf`` for absent classes)."""
    if state.head is None:
      return self.logits(params, state.support_x, state.support_y, x,
                         training=False)
    return self.head_logits(params, state.head,
                            self.apply(params["model"], x))

  def task_loss(self, params, task: Task, *, iteration=0):
    del iteration  # no schedule
    logits, stats = self.logits(params, task.support_x, task.support_y,
                                task.query_x, collect=True)
    loss = self.train_loss(logits, task.query_y)
    metrics = {"loss": loss,
               "accuracy": losses.accuracy(logits, task.query_y)}
    if stats is not None:
      metrics[BATCH_STATS] = stats
    return loss, metrics

  def evaluate(self, params, task: Task, *, steps=None):
    """Query ``loss`` (plain cross-entropy) and ``accuracy``, each ``(1,)``.

    ``steps`` is accepted for the common interface and ignored: there are no
    inner steps, so every curve has length 1.
    """
    del steps
    logits = self.logits(params, task.support_x, task.support_y, task.query_x,
                         training=False)
    return {"loss": losses.cross_entropy(logits, task.query_y)[None],
            "accuracy": losses.accuracy(logits, task.query_y)[None]}

  @property
  def example_ndim(self) -> int | None:
    return model_example_ndim(self.model)

  def check(self, tasks: Task, *, batched: bool = True) -> Task:
    """:func:`check_tasks` plus: every query class has a support example.

    Labels must lie in ``[0, ways)``, or with ``ways=None`` in ``[0, S)``
    (the logits are as wide as the support set), for numpy and jax labels
    alike. The second check runs on host (numpy) labels only: it is a
    per-task set difference, too costly to sync for on every step.
    """
    width = self.ways
    if width is None and len(np.shape(tasks.support_y)) > int(batched):
      width = int(np.shape(tasks.support_y)[int(batched)])
    check_tasks(tasks, batched=batched, classification=True, ways=self.ways,
                num_outputs=width, example_ndim=self.example_ndim)
    sy, qy = tasks.support_y, tasks.query_y
    if isinstance(sy, np.ndarray) and isinstance(qy, np.ndarray):
      sy2, qy2 = (sy, qy) if batched else (sy[None], qy[None])
      for t in range(sy2.shape[0]):
        missing = np.setdiff1d(qy2[t], sy2[t])
        if missing.size:
          raise ValueError(
              f"task {t}: query labels {missing.tolist()} have no support "
              "example, so the learner cannot score their class")
    return tasks
