"""Transfer baselines: pretrain a classifier on all base classes, then fit a
head on each test task's support features.

A reviewer's first question about a few-shot method is whether it beats a
well-trained transfer baseline. These learners run on the same learner
contract, :func:`metajax.make_meta_step` and :func:`metajax.fit` as every
meta-learner, and are evaluated by the same harness on the same test tasks:

* **Pretraining** (:class:`TransferLearner`'s ``task_loss``): a task is a
  minibatch of labelled images drawn over *all* base classes by
  :class:`metajax.data.sampler.ClassBatchSampler` (global labels in
  ``[0, base_classes)``; the minibatch is stored as the task's support and
  query halves and read as one batch). The loss is the mean cross-entropy
  of a ``base_classes``-way classifier on the backbone's features:

      linear  (Baseline):    logits = f(x) W + b,
      cosine  (Baseline++):  logits = s <f(x)/||f(x)||, g_c v_c/||v_c||>,

  ``s`` = 10 beyond 200 classes, else 2 (distLinear). Standard batch norm
  (``norm='running'``): training batches normalise with their own
  statistics, evaluation with the running averages.
* **Test** (``adapt`` / ``evaluate``): the backbone is frozen, the
  pretraining classifier discarded, and ``head`` is fitted on the support
  features (:mod:`metajax.algorithms.transfer_heads`): ``'linear'``
  (Baseline), ``'cosine'`` (Baseline++), ``'logistic'`` (RFS-simple, on
  L2-normalised features) or ``'simpleshot'`` (CL2N nearest centroid; needs
  the base classes' mean feature, :meth:`TransferLearner.with_feature_mean`
  and :meth:`TransferLearner.feature_mean_of`). Heads are pure functions,
  jit-compiled and vmapped over test tasks by the harness.
* **Meta-Baseline** (:class:`MetaBaseline`): after the same linear
  pretraining, episodic meta-training of a cosine nearest-centroid
  classifier with a learned temperature, starting from the pretrained
  backbone (:meth:`MetaBaseline.from_pretrained`).

Registered as ``baseline``, ``baseline_pp``, ``rfs_simple``, ``simpleshot``
(:class:`TransferLearner` with the pretraining classifier and head of each)
and ``meta_baseline``; their settings and sources are in
:mod:`metajax.configs.transfer`.

References:
  Chen, Liu, Kira, Wang & Huang, "A Closer Look at Few-shot
  Classification", ICLR 2019 (Baseline, Baseline++).
  Tian, Wang, Krishnan, Tenenbaum & Isola, "Rethinking Few-Shot Image
  Classification: a Good Embedding Is All You Need?", ECCV 2020
  (RFS-simple).
  Wang, Chao, Weinberger & van der Maaten, "SimpleShot: Revisiting
  Nearest-Neighbor Classification for Few-Shot Learning", 2019.
  Chen, Liu, Xu, Darrell & Wang, "Meta-Baseline: Exploring Simple
  Meta-Learning for Few-Shot Learning", ICCV 2021.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metajax.algorithms import transfer_heads as heads
from metajax.algorithms.embedding import EmbeddingLearner, mask_absent
from metajax.core import losses
from metajax.core.learner import BATCH_STATS
from metajax.core.tasks import Task, check_tasks

#: pretraining classifiers: Baseline's linear layer, Baseline++'s distLinear.
CLASSIFIERS = ("linear", "cosine")
#: test-time heads fitted on the frozen support features.
HEADS = ("linear", "cosine", "logistic", "simpleshot")


@dataclasses.dataclass(frozen=True, eq=False)
class TransferLearner(EmbeddingLearner):
  """Supervised pretraining on the base classes, a head fitted at test time.

  Meta-parameters are ``{'model': backbone, 'classifier': pretraining
  classifier}`` (``{'kernel', 'bias'}`` or ``{'direction', 'gain'}``); the
  classifier is not used at test time.

  Attributes:
    base_classes: the pretraining classifier's outputs (the sampler's
      ``num_labels``: 4112 for Omniglot's Vinyals training split with
      rotations as classes).
    classifier: one of :data:`CLASSIFIERS`.
    head: one of :data:`HEADS`.
    classifier_scale: distLinear's scale in pretraining (``None``: 2 up to
      200 classes, else 10).
    head_scale: the cosine test head's scale (``None``: by the same rule on
      the test ways).
    head_epochs, head_batch, head_lr, head_momentum, head_dampening,
      head_weight_decay: the SGD loop of the linear and cosine test heads
      (Chen et al.'s 100 epochs of minibatches of 4, SGD 0.01, momentum 0.9,
      dampening 0.9, weight decay 0.001).
    head_seed: the test heads' initialisation and minibatch orders; the same
      key for every task (tasks differ in their examples and their random
      example order already).
    logistic_c: RFS's inverse L2 penalty (scikit-learn's ``C``).
    feature_mean: SimpleShot's centring vector (set by
      :meth:`with_feature_mean`; ``None`` otherwise).
  """
  base_classes: int | None = None
  classifier: str = "linear"
  head: str = "linear"
  classifier_scale: float | None = None
  head_scale: float | None = None
  head_epochs: int = 100
  head_batch: int = 4
  head_lr: float = 0.01
  head_momentum: float = 0.9
  head_dampening: float = 0.9
  head_weight_decay: float = 1e-3
  head_seed: int = 0
  logistic_c: float = 1.0
  feature_mean: Any = dataclasses.field(default=None, kw_only=True,
                                        repr=False)

  def __post_init__(self):
    super().__post_init__()
    if (isinstance(self.base_classes, bool)
        or not isinstance(self.base_classes, (int, np.integer))
        or self.base_classes < 2):
      raise ValueError(
          "base_classes (the pretraining classifier's outputs) must be an "
          f"integer >= 2, got {self.base_classes!r}")
    if self.classifier not in CLASSIFIERS:
      raise ValueError(f"unknown classifier {self.classifier!r}; choose one "
                       f"of {CLASSIFIERS}")
    if self.head not in HEADS:
      raise ValueError(f"unknown head {self.head!r}; choose one of {HEADS}")
    for name in ("head_epochs", "head_batch"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be at least 1, got "
                         f"{getattr(self, name)}")
    for name in ("head_lr", "logistic_c"):
      if not getattr(self, name) > 0:
        raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

  # -- pretraining -----------------------------------------------------------
  def init_head(self, rng, features):
    d = features.shape[-1]
    if self.classifier == "linear":
      h = heads.init_linear(rng, d, self.base_classes, zero_bias=True,
                            dtype=features.dtype)
      return {"classifier": {"kernel": h.kernel, "bias": h.bias}}
    h = heads.init_cosine(rng, d, self.base_classes, dtype=features.dtype)
    return {"classifier": {"direction": h.direction, "gain": h.gain}}

  def classifier_logits(self, params, features) -> jax.Array:
    """``(N, base_classes)`` logits of the pretraining classifier."""
    c = params["classifier"]
    if self.classifier == "linear":
      return heads.linear_logits(heads.LinearHead(c["kernel"], c["bias"]),
                                 features)
    scale = (self.classifier_scale if self.classifier_scale is not None
             else heads.cosine_scale(self.base_classes))
    return heads.cosine_logits(heads.CosineHead(c["direction"], c["gain"]),
                               features, scale)

  def task_loss(self, params, task: Task, *, iteration=0):
    """Cross-entropy of the base-class classifier on one minibatch (the
    task's support and query halves, one batch-norm call)."""
    del iteration
    x = jnp.concatenate([task.support_x, task.query_x], 0)
    y = jnp.concatenate([task.support_y, task.query_y], 0)
    f, stats = self.apply(params["model"], x, collect=True)
    logits = self.classifier_logits(params, f)
    loss = losses.cross_entropy(logits, y)
    metrics = {"loss": loss, "accuracy": losses.accuracy(logits, y)}
    if stats is not None:
      metrics[BATCH_STATS] = stats
    return loss, metrics

  # -- the test-time head ------------------------------------------------------
  def fit_head(self, params, features, labels, num_classes, *, training=True):
    del params, training
    features = jax.lax.stop_gradient(features)
    counts = jnp.sum(jax.nn.one_hot(labels, num_classes), 0)
    rng = jax.random.PRNGKey(self.head_seed)
    if self.head in ("linear", "cosine"):
      scale = (self.head_scale if self.head_scale is not None
               else heads.cosine_scale(num_classes))
      fitted = heads.fit_sgd_head(
          features, labels, num_classes, kind=self.head, rng=rng,
          epochs=self.head_epochs, batch_size=self.head_batch,
          lr=self.head_lr, momentum=self.head_momentum,
          dampening=self.head_dampening,
          weight_decay=self.head_weight_decay, scale=scale)
      return fitted, counts
    if self.head == "logistic":
      return heads.fit_logistic_regression(
          heads.l2_normalize(features), labels, num_classes,
          c=self.logistic_c), counts
    if self.feature_mean is None:
      raise ValueError(
          "the 'simpleshot' head centres features on the base classes' mean "
          "feature: use learner.with_feature_mean(learner.feature_mean_of("
          "params, base_images))")
    return heads.simpleshot_centroids(features, labels, num_classes,
                                      self.feature_mean)

  def head_logits(self, params, head, features):
    del params
    fitted, counts = head
    features = jax.lax.stop_gradient(features)
    if self.head == "linear":
      logits = heads.linear_logits(fitted, features)
    elif self.head == "cosine":
      scale = (self.head_scale if self.head_scale is not None
               else heads.cosine_scale(counts.shape[0]))
      logits = heads.cosine_logits(fitted, features, scale)
    elif self.head == "logistic":
      logits = heads.linear_logits(fitted, heads.l2_normalize(features))
    else:  # simpleshot: (centroids, counts)
      return heads.simpleshot_logits(features, fitted, counts,
                                     self.feature_mean)
    return mask_absent(logits, counts)

  # -- SimpleShot's base mean ----------------------------------------------------
  def with_feature_mean(self, mean) -> "TransferLearner":
    """This learner with SimpleShot's centring vector ``mean`` ``(D,)``."""
    return dataclasses.replace(self, feature_mean=jnp.asarray(mean))

  def feature_mean_of(self, params, images, *, batch_size: int = 1000
                      ) -> jax.Array:
    """The mean backbone feature of ``images`` (``(N, *example_shape)``:
    the base classes' images, SimpleShot's ``train_mean``), in batches of
    ``batch_size``; call it on the evaluation learner
    (:meth:`with_model_state`) so batch norm uses the running averages."""
    images = np.asarray(images)
    if images.ndim < 2 or images.shape[0] == 0:
      raise ValueError(f"expected a batch of at least one example, got "
                       f"shape {images.shape}")
    total = 0.0
    for i in range(0, images.shape[0], batch_size):
      total = total + _feature_sum(
          self, params["model"], jnp.asarray(images[i:i + batch_size],
                                             jnp.float32))
    return total / images.shape[0]

  # -- checks ------------------------------------------------------------------
  def check(self, tasks: Task, *, batched: bool = True) -> Task:
    """Labels must be class ids below ``base_classes`` (pretraining
    minibatches) or ``ways`` (test tasks)."""
    return check_tasks(tasks, batched=batched, classification=True,
                       num_outputs=max(self.base_classes, self.ways or 0),
                       example_ndim=self.example_ndim)


# One compiled program per learner object and batch shape, shared by every
# call (a jit of a fresh lambda per call would recompile each time).
@functools.partial(jax.jit, static_argnums=0)
def _feature_sum(learner, model_params, x):
  return jnp.sum(learner.apply(model_params, x), 0)


@dataclasses.dataclass(frozen=True, eq=False)
class MetaBaseline(EmbeddingLearner):
  """Meta-Baseline's meta stage: cosine nearest-centroid classification.

  Logits ``tau * <f(q)/||f(q)||, c_k/||c_k||>`` with ``c_k`` the mean support
  feature of class ``k`` and a learned temperature ``tau`` (initialised to
  ``temperature``), trained on episodes by the usual meta-step from a
  backbone pretrained as Baseline (:meth:`from_pretrained`). Support and
  query are embedded together (``embedding='joint'``), as the code's
  ``torch.cat([x_shot, x_query])``.

  Attributes:
    temperature: the temperature's initial value (10, the code's default).
    learn_temperature: whether it is a meta-parameter (the code's default)
      or a constant.
  """
  temperature: float = 10.0
  learn_temperature: bool = True

  def init_head(self, rng, features):
    del rng
    if not self.learn_temperature:
      return {}
    return {"temperature": jnp.asarray(self.temperature, features.dtype)}

  def _temperature(self, params):
    return (params["temperature"] if self.learn_temperature
            else self.temperature)

  def fit_head(self, params, features, labels, num_classes, *, training=True):
    del params, training
    return heads.cosine_centroids(features, labels, num_classes)

  def head_logits(self, params, head, features):
    centroids, counts = head
    return heads.cosine_centroid_logits(features, centroids, counts,
                                        self._temperature(params))

  def from_pretrained(self, pretrained_params) -> dict:
    """Meta-parameters whose backbone is ``pretrained_params['model']`` (a
    :class:`TransferLearner`'s) and whose temperature is the initial one."""
    params = {"model": pretrained_params["model"]}
    if self.learn_temperature:
      params["temperature"] = jnp.asarray(self.temperature, jnp.float32)
    return params
