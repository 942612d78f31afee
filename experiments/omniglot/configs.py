"""Protocol, budget and learner settings of the Omniglot experiment.

The ``default`` budget is a *short* run (500 meta-steps of 8 tasks with a
32-filter conv-4) that finishes in minutes on a laptop CPU, so every method
can be compared on the same protocol; the papers' budgets are tens of
thousands of steps with 64 filters (``--set iterations=...``,
``filters=...``, ``meta_batch=...``). ``tiny`` runs in seconds, for tests.

Learner hyperparameters are each paper's Omniglot values,
``metajax.configs.get(method, "omniglot_<ways>way_<shots>shot")``; the
fields ``inner_lr``, ``inner_steps`` and ``eval_inner_steps`` replace them
where set (``None``: the paper's). Every method shares the outer optimiser
Adam(``meta_lr``) except Reptile, whose outer update is its own (SGD on
``theta - phi`` with the paper's linearly annealed step, over this run's
``iterations``; ``meta_lr`` does not apply to it).

Training episodes are the test episodes' ``ways``/``shots``/``queries``
unless ``train_ways``/``train_shots``/``train_queries`` are set (ProtoNets
trains 60-way, Reptile 10-shot). Optimisation-based learners end in a
linear head of one output per class, so they train and test with the same
number of ways.

Batch norm (``norm``) is a first-class choice, recorded in every results
file: ``'transductive'`` (statistics of each batch, per task: MAML's and
Reptile's ``--transductive``), ``'running'`` (batch statistics in training,
running averages at test: ProtoNets' ``eval()``), ``'maml'`` (cbfinn/maml's
offset-only batch norm; with ``adapt_norm=False`` it stays out of the inner
loop as there) or ``'none'``.

The papers' own protocols are named configs, ``paper_<method>_<N>w<K>s``
(see :func:`paper_config` and ``--config``): network, batch-norm policy,
episodes, optimiser, schedule and full budget of each cell as the official
code ran it, with its published number; ``--set iterations=...`` runs one
shortened (the results say so).
"""
from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp

from experiments import common
from metajax import configs as paper_configs
from metajax.algorithms import model_learner, registry
from metajax.core import task_map as task_map_lib
from metajax.data import omniglot, sampler, splits
from metajax.core import masks
from metajax.models import Conv4
from metajax.models import conv4 as conv4_lib
from metajax.models import layers

#: learners that adapt a linear head on conv-4 (one output per class).
HEAD_METHODS = ("maml", "fomaml", "anil", "boil", "cavia", "metasgd",
                "mamlpp", "reptile", "imaml", "lstm_metalearner")
#: transfer baselines: supervised pretraining over all training classes
#: (minibatches of ``pretrain_batch`` images, ``iterations`` steps), then a
#: head fitted on each test task's frozen support features.
TRANSFER_METHODS = ("baseline", "baseline_pp", "rfs_simple", "simpleshot")
#: pretrained as ``baseline`` (``pretrain_iterations`` steps), then
#: meta-trained on episodes (``iterations`` steps).
META_BASELINE = "meta_baseline"
#: the methods with a supervised pretraining stage.
PRETRAIN_METHODS = TRANSFER_METHODS + (META_BASELINE,)
#: metric, closed-form and transfer learners on conv-4 features (no head).
FEATURE_METHODS = ("protonet", "matchingnet", "snail", "r2d2", "metaoptnet",
                   "metaoptnet_ridge") + PRETRAIN_METHODS
METHODS = HEAD_METHODS + FEATURE_METHODS
#: config fields that override the paper's learner hyperparameters.
LEARNER_OVERRIDES = ("inner_lr", "inner_steps", "eval_inner_steps")
#: The MAML family's inner step on a network other than its paper's. The
#: papers' Omniglot step (2.0 on metajax's mean loss: cbfinn/maml's 0.4 on
#: its summed loss) belongs to MAML's network (global-pooled features,
#: MAML's batch norm, stride-2 convolutions, an N(0, 1) head). On the shared
#: protocol's conv-4 it is far too large: MAML 34.6% and first-order MAML
#: 37.2% after 500 steps, against 89.3% and 80.6% at 0.4 (committed
#: ``results/omniglot_5w1s``). Used where ``inner_lr`` is unset and a
#: field of :data:`PAPER_NETWORK_FIELDS` differs from the paper's protocol.
OTHER_NETWORK_INNER_LR = {"maml": 0.4, "fomaml": 0.4, "anil": 0.4,
                          "metasgd": 0.4}
#: the fields that make a conv-4 the paper's network (``adapt_norm`` is not
#: one: ANIL on MAML's network adapts the head only either way).
PAPER_NETWORK_FIELDS = ("features", "head_init", "norm", "downsample")
#: head methods whose learner takes an adapt mask (``adapt_norm=False``).
MASKED_METHODS = ("maml", "fomaml", "metasgd", "reptile")
#: head methods whose evaluation can score each query with the support set.
CONTEXT_METHODS = ("maml", "fomaml", "anil", "boil", "cavia", "metasgd",
                   "reptile", "imaml", "lstm_metalearner")
#: methods whose meta-gradient directions can be compared during training.
GRAD_COMPARE_METHODS = ("maml", "fomaml", "anil", "metasgd")
#: the resize filters of ``Config.resize`` (``jax.image.resize`` methods).
RESIZE_METHODS = ("linear", "nearest")
#: ``Config.compute_dtype`` -> the backbone's computation dtype (``None``:
#: its parameters' float32).
COMPUTE_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}
#: which classes meta-train: the split's training classes, or training and
#: validation classes together (ProtoNets' final retraining).
TRAIN_CLASSES = ("train", "trainval")
#: Validation episodes per round: the same ones every round, or new ones.
VAL_EPISODES = ("fixed", "fresh")


@dataclasses.dataclass
class Config:
  """One Omniglot run: one learner, trained and tested on one protocol.

  Attributes:
    method: a learner of :data:`METHODS` (the registry's names).
    ways, shots, queries: the test episodes (N-way K-shot, Q queries per
      class); ``ways``/``shots`` also pick the paper setting.
    train_ways, train_shots, train_queries: the training episodes; ``None``:
      as at test time.
    split: the class split, one of :data:`metajax.data.splits.SPLITS`
      (Vinyals by default).
    rotation: the rotation policy, one of
      :data:`metajax.data.sampler.ROTATIONS` (rotations as new classes by
      default, as ProtoNets).
    image_size: images are resized to ``image_size`` squared.
    resize: the resize filter, one of :data:`RESIZE_METHODS`: ``'linear'``
      (antialiased, grey edges) or ``'nearest'`` (binary inputs, as
      jakesnell/prototypical-networks gets from PIL's default filter on the
      1-bit PNGs).
    eval_rotation: the test episodes' rotation policy (``None``: as
      ``rotation``; Reptile's code does not rotate test characters).
    filters, blocks, downsample, norm, features: the conv-4 backbone
      (:class:`metajax.models.Conv4`): channels, conv blocks, ``'maxpool'``
      or ``'stride'`` downsampling, batch-norm policy (one of
      :data:`metajax.models.layers.NORMS`), and whether the head (or the
      metric learners) see the ``'flatten'``-ed map or its spatial mean
      (``'pool'``).
    head_init: the head's kernel initialiser (``'normal'``: N(0, 1), as
      cbfinn/maml).
    conv_init: the conv blocks' initialisation, ``'flax'`` (LeCun-normal
      kernels, unit batch-norm scales) or ``'torch_legacy'`` (PyTorch < 1.0's
      defaults, which the ProtoNets code ran with: uniform kernels and
      biases of bound 1/sqrt(fan_in), batch-norm scales U(0, 1)); see
      :func:`metajax.models.conv4.block_initializers`.
    compute_dtype: ``'float32'`` or ``'bfloat16'`` (mixed precision: the
      backbone computes in bfloat16, inner loop included, while parameters,
      fast weights, batch-norm statistics, losses and meta-gradients stay
      float32; see :class:`metajax.models.Conv4`'s ``dtype``). For
      accelerators with bfloat16 units; on CPUs it is slower.
    adapt_norm: whether batch norm's parameters adapt in the inner loop
      (``False``: cbfinn/maml's fast weights, which leave them out).
    eval_query_context: ``'batch'`` (all queries in one call) or
      ``'support'`` (each query with the support set, Reptile's
      non-transductive evaluation); see
      :class:`~metajax.algorithms.model_learner.ModelLearner`.
    inner_lr, inner_steps, eval_inner_steps: the learner's inner loop;
      ``None``: the paper's values.
    iterations: meta-training steps (the transfer baselines of
      :data:`TRANSFER_METHODS`: pretraining steps).
    meta_batch: tasks per meta-step (not the pretraining minibatches).
    pretrain_batch: images per pretraining minibatch (the transfer
      baselines and Meta-Baseline; Chen et al.: 16).
    pretrain_iterations: Meta-Baseline's pretraining steps (``None``: as
      ``iterations``); the other methods have no separate stage.
    meta_lr: Adam's learning rate (not Reptile's: see the module docstring).
    adam_eps: Adam's epsilon (iMAML's code: 1e-3).
    lr_decay_every, lr_decay: multiply ``meta_lr`` by ``lr_decay`` every
      ``lr_decay_every`` meta-steps (ProtoNets: halved every 2000
      episodes); ``None``: constant.
    anneal_iterations: Reptile's meta step anneals over this many steps
      (the paper's 100,000); ``None``: over this run's ``iterations``.
    train_classes: ``'train'`` or ``'trainval'`` (train on the training and
      validation classes).
    val_every: validate every this many meta-steps on ``val_tasks``
      episodes of the validation classes (drawn from ``val_seed``) and
      test the best validated weights (early stopping); ``None``: no
      validation, test the last weights.
    val_tasks, val_seed: the validation episodes.
    val_episodes: ``'fixed'``: every round scores the same ``val_tasks``
      episodes (stream ``val_seed``), so the criterion moves only with the
      model; ``'fresh'``: each round draws new ones (stream ``val_seed +
      step``, so a resumed run draws the same), as ProtoNets' code does
      (its ``EpisodicBatchSampler`` draws classes with ``torch.randperm``
      on every pass). With fresh episodes, sampling noise alone sets new
      bests, so early stopping ends later and less predictably. The paper
      cells keep ``'fixed'``, the setting of their committed results.
    patience: stop after this many validations without improvement.
    retrain_trainval: after early stopping, retrain from scratch on the
      training and validation classes for the best validated number of
      steps and test that model (ProtoNets' ``run_trainval.py``).
    eval_tasks: test tasks (600, as MAML and ProtoNets).
    eval_seed: the test-task stream (the same tasks for every method).
    eval_steps: inner steps at test time; ``None``: the learner's own.
    eval_batch: test tasks per compiled call.
    seed: initialisation and training tasks.
    steps_per_call: meta-steps compiled into one call.
    checkpoint_every: meta-steps between checkpoints.
    task_map, chunk_size: how a meta-batch's tasks are mapped
      (:mod:`metajax.core.task_map`).
    grad_compare_every: every this many meta-steps (and at the start and
      end), compare the exact, first-order, implicit and Reptile
      meta-gradients on a fixed batch of training tasks
      (:mod:`metajax.evaluation.meta_gradients`), logged under the split
      ``grad_compare`` and summarised in ``results.json``; MAML-style
      methods (:data:`GRAD_COMPARE_METHODS`); ``None``: off.
  """
  method: str = "maml"
  ways: int = 5
  shots: int = 1
  queries: int = 15
  train_ways: int | None = None
  train_shots: int | None = None
  train_queries: int | None = None
  split: str = "vinyals"
  rotation: str = "classes"
  eval_rotation: str | None = None
  image_size: int = 28
  resize: str = "linear"
  filters: int = 32
  blocks: int = 4
  downsample: str = "maxpool"
  norm: str = "transductive"
  features: str = "flatten"
  head_init: str = "lecun_normal"
  conv_init: str = "flax"
  compute_dtype: str = "float32"
  adapt_norm: bool = True
  eval_query_context: str = "batch"
  inner_lr: float | None = None
  inner_steps: int | None = None
  eval_inner_steps: int | None = None
  iterations: int = 500
  meta_batch: int = 8
  pretrain_batch: int = 16
  pretrain_iterations: int | None = None
  meta_lr: float = 1e-3
  adam_eps: float = 1e-8
  lr_decay_every: int | None = None
  lr_decay: float = 0.5
  anneal_iterations: int | None = None
  train_classes: str = "train"
  val_every: int | None = None
  val_tasks: int = 200
  val_seed: int = 1
  val_episodes: str = "fixed"
  patience: int = 20
  retrain_trainval: bool = False
  eval_tasks: int = 600
  eval_seed: int = 0
  eval_steps: int | None = None
  eval_batch: int = 50
  seed: int = 0
  steps_per_call: int = 50
  checkpoint_every: int = 250
  task_map: str = "map"
  grad_compare_every: int | None = None
  chunk_size: int | None = None

  @property
  def batch_norm_policy(self) -> str:
    """The batch-norm policy label of this run's test numbers: ``norm``,
    or ``'non_transductive'`` when each query is scored with the support
    set (Reptile's code)."""
    if self.eval_query_context == "support":
      return "non_transductive"
    return self.norm

  @property
  def setting(self) -> str:
    """The paper setting of the test episodes, ``omniglot_<N>way_<K>shot``."""
    return f"omniglot_{self.ways}way_{self.shots}shot"

  def episodes(self, *, train: bool) -> tuple[int, int, int]:
    """``(ways, shots, queries)`` of the training or the test episodes."""
    if not train:
      return self.ways, self.shots, self.queries
    pick = lambda v, default: default if v is None else v
    return (pick(self.train_ways, self.ways),
            pick(self.train_shots, self.shots),
            pick(self.train_queries, self.queries))

  def validate(self) -> None:
    """Raises ``ValueError`` naming the first field with an impossible value.

    Zero iterations are refused: the learners start from random weights,
    and an untrained network's accuracy is not a result of this experiment.
    The learner is built once here (no compilation), so a paper setting
    the method lacks, or an override it has no use for, fails before any
    data is loaded.
    """
    common.check_choice("method", self.method, METHODS)
    common.check_int("ways", self.ways, 2)
    common.check_int("shots", self.shots, 1)
    common.check_int("queries", self.queries, 1)
    for name in ("train_ways", "train_shots", "train_queries"):
      if getattr(self, name) is not None:
        common.check_int(name, getattr(self, name), 2 if name ==
                         "train_ways" else 1)
    for prefix, train in (("", False), ("train_", True)):
      _, shots, queries = self.episodes(train=train)
      if shots + queries > omniglot.EXAMPLES:
        raise ValueError(
            f"{prefix}shots + {prefix}queries must be at most "
            f"{omniglot.EXAMPLES} (the drawings of one Omniglot character), "
            f"got {shots} + {queries}")
    train_ways = self.episodes(train=True)[0]
    if self.method in HEAD_METHODS and train_ways != self.ways:
      raise ValueError(
          f"train_ways must equal ways for {self.method}: its linear head has "
          f"one output per class (got train_ways={self.train_ways}, "
          f"ways={self.ways})")
    common.check_choice("split", self.split, splits.SPLITS)
    common.check_choice("rotation", self.rotation, sampler.ROTATIONS)
    if self.eval_rotation is not None:
      common.check_choice("eval_rotation", self.eval_rotation,
                          sampler.ROTATIONS)
    common.check_int("blocks", self.blocks, 1)
    common.check_int("image_size", self.image_size, 2 ** self.blocks)
    common.check_choice("resize", self.resize, RESIZE_METHODS)
    common.check_choice("compute_dtype", self.compute_dtype,
                        tuple(COMPUTE_DTYPES))
    common.check_int("filters", self.filters, 1)
    common.check_choice("downsample", self.downsample, conv4_lib.DOWNSAMPLE)
    common.check_choice("features", self.features, conv4_lib.FEATURES)
    common.check_choice("norm", self.norm, layers.NORMS)
    common.check_choice("head_init", self.head_init,
                        tuple(conv4_lib.HEAD_INITS))
    common.check_choice("conv_init", self.conv_init, conv4_lib.INITS)
    common.check_choice("adapt_norm", self.adapt_norm, (True, False))
    common.check_choice("eval_query_context", self.eval_query_context,
                        model_learner.EVAL_QUERY_CONTEXTS)
    if (self.eval_query_context != "batch"
        and self.method not in CONTEXT_METHODS):
      raise ValueError(
          f"eval_query_context={self.eval_query_context!r} applies to "
          f"{', '.join(CONTEXT_METHODS)}, not {self.method}")
    if not self.adapt_norm and self.method not in MASKED_METHODS:
      raise ValueError(
          f"adapt_norm=False applies to {', '.join(MASKED_METHODS)} (their "
          f"inner loop takes an adapt mask), not {self.method}")
    if self.norm == "running" and self.method == "mamlpp":
      raise ValueError(
          "norm='running' does not apply to mamlpp (MAML++ keeps per-step "
          "batch statistics of its own)")
    if self.inner_lr is not None:
      common.check_positive("inner_lr", self.inner_lr)
    if self.inner_steps is not None:
      common.check_int("inner_steps", self.inner_steps, 1)
    if self.eval_inner_steps is not None:
      common.check_int("eval_inner_steps", self.eval_inner_steps, 0)
    common.check_int("iterations", self.iterations, 1)
    common.check_int("meta_batch", self.meta_batch, 1)
    common.check_int("pretrain_batch", self.pretrain_batch, 2)
    if self.pretrain_iterations is not None:
      if self.method != META_BASELINE:
        raise ValueError(
            f"pretrain_iterations applies to {META_BASELINE} (the transfer "
            f"baselines pretrain for iterations), not {self.method}")
      common.check_int("pretrain_iterations", self.pretrain_iterations, 1)
    common.check_positive("meta_lr", self.meta_lr)
    common.check_positive("adam_eps", self.adam_eps)
    if self.lr_decay_every is not None:
      common.check_int("lr_decay_every", self.lr_decay_every, 1)
    common.check_positive("lr_decay", self.lr_decay)
    if self.anneal_iterations is not None:
      common.check_int("anneal_iterations", self.anneal_iterations, 1)
    common.check_choice("train_classes", self.train_classes, TRAIN_CLASSES)
    if self.val_every is not None:
      common.check_int("val_every", self.val_every, 1)
      if self.split == "lake":
        raise ValueError("val_every needs validation classes; the 'lake' "
                         "split has none")
      if self.iterations % self.val_every:
        # Rounds end at multiples of val_every, so an extended run
        # validates where a run given the larger budget would have.
        raise ValueError(
            f"iterations ({self.iterations}) must be a multiple of val_every "
            f"({self.val_every})")
    common.check_int("val_tasks", self.val_tasks, 1)
    common.check_int("val_seed", self.val_seed, 0)
    common.check_choice("val_episodes", self.val_episodes, VAL_EPISODES)
    common.check_int("patience", self.patience, 1)
    common.check_choice("retrain_trainval", self.retrain_trainval,
                        (True, False))
    if self.retrain_trainval and self.method in PRETRAIN_METHODS:
      raise ValueError(
          f"retrain_trainval does not apply to {self.method}: its "
          "pretraining classifier is as wide as the training classes")
    if self.retrain_trainval and (self.val_every is None
                                  or self.train_classes != "train"):
      raise ValueError(
          "retrain_trainval needs early stopping (val_every) on the "
          "training classes (train_classes='train')")
    common.check_int("eval_tasks", self.eval_tasks, 1)
    common.check_int("eval_seed", self.eval_seed, 0)
    if self.eval_steps is not None:
      common.check_int("eval_steps", self.eval_steps, 0)
      if (self.eval_inner_steps is not None
          and self.eval_inner_steps != self.eval_steps):
        raise ValueError(
            f"eval_steps={self.eval_steps} and eval_inner_steps="
            f"{self.eval_inner_steps} disagree; set one of them")
    common.check_int("eval_batch", self.eval_batch, 1)
    if self.grad_compare_every is not None:
      common.check_int("grad_compare_every", self.grad_compare_every, 1)
      if self.method not in GRAD_COMPARE_METHODS:
        raise ValueError(
            f"grad_compare_every applies to {GRAD_COMPARE_METHODS}, not "
            f"{self.method}")
      if self.val_every is not None:
        raise ValueError("grad_compare_every and val_every both train in "
                         "rounds; set one of them")
    common.check_int("seed", self.seed, 0)
    common.check_int("steps_per_call", self.steps_per_call, 1)
    common.check_int("checkpoint_every", self.checkpoint_every, 1)
    common.check_choice("task_map", self.task_map, task_map_lib.METHODS)
    if self.chunk_size is not None:
      common.check_int("chunk_size", self.chunk_size, 1)
    self._check_learner()

  def _check_learner(self) -> None:
    available = paper_configs.settings(self.method)
    if self.setting not in available:
      cells = ", ".join(s for s in available if s.startswith("omniglot_"))
      raise ValueError(
          f"ways={self.ways}, shots={self.shots}: {self.method} has no paper "
          f"setting {self.setting!r}; its Omniglot settings are {cells}")
    fields = {f.name for f in dataclasses.fields(
        type(build_learner(self, overrides=False)))}
    for name in LEARNER_OVERRIDES:
      if getattr(self, name) is not None and name not in fields:
        raise ValueError(
            f"{name} does not apply to {self.method} (its learner has no "
            f"such hyperparameter); leave it None")
    build_learner(self)  # the learner's own checks of the overrides


def budget_dependent(cfg: Config) -> list[str]:
  """What in ``cfg``'s run depends on its budget ``iterations`` (empty: a
  run extended with ``--extend`` continues exactly as if it had been given
  the larger budget from the start)."""
  reasons = []
  if cfg.method == "reptile" and cfg.anneal_iterations is None:
    reasons.append("Reptile's meta step anneals over the run's iterations "
                   "(set anneal_iterations)")
  # Early stopping is not budget-dependent: validation rounds, the best
  # checkpoint and the train+val retraining (a fresh model for the best
  # round's step count, its schedule counted in steps) all resume, and the
  # best round can only move later; a run that stopped early would have
  # stopped at the same round with any larger budget.
  return reasons


def backbone(cfg: Config) -> Conv4:
  """Conv-4 with a head of ``ways`` outputs (head methods) or features."""
  return Conv4(num_outputs=cfg.ways if cfg.method in HEAD_METHODS else None,
               filters=cfg.filters, blocks=cfg.blocks,
               downsample=cfg.downsample, norm=cfg.norm,
               features=cfg.features, head_init=cfg.head_init,
               conv_init=cfg.conv_init, dtype=COMPUTE_DTYPES[cfg.compute_dtype])


def paper_network(cfg: Config) -> bool:
  """Whether ``cfg``'s conv-4 is its paper setting's network (every
  :data:`PAPER_NETWORK_FIELDS` the paper's protocol names is as named)."""
  protocol = paper_configs.get(cfg.method, cfg.setting).protocol
  return all(getattr(cfg, k) == protocol[k] for k in PAPER_NETWORK_FIELDS
             if k in protocol)


def build_learner(cfg: Config, *, overrides: bool = True,
                  base_classes: int | None = None):
  """The learner of ``cfg.method`` with the paper's values for ``cfg.setting``.

  The MAML family on another network than its paper's starts from
  :data:`OTHER_NETWORK_INNER_LR` instead of the paper's inner step. The
  transfer baselines' pretraining classifier gets ``base_classes`` outputs
  (the pretraining sampler's ``num_labels``; ``None``: the setting's).

  ``ways`` is the episodes' (metric learners: the larger of training and
  test ways, their logits' static width), except for Matching Networks,
  whose logits follow the support set. With ``overrides`` the config's
  non-``None`` :data:`LEARNER_OVERRIDES` replace the paper's values.
  """
  kwargs = {}
  if cfg.method != "matchingnet":
    kwargs["ways"] = max(cfg.ways, cfg.episodes(train=True)[0])
  if cfg.method in OTHER_NETWORK_INNER_LR and not paper_network(cfg):
    kwargs["inner_lr"] = OTHER_NETWORK_INNER_LR[cfg.method]
  if overrides:
    kwargs.update({name: getattr(cfg, name) for name in LEARNER_OVERRIDES
                   if getattr(cfg, name) is not None})
  if not cfg.adapt_norm:
    kwargs["adapt_mask"] = masks.exclude_norm
  if cfg.eval_query_context != "batch":
    kwargs["eval_query_context"] = cfg.eval_query_context
  if base_classes is not None and cfg.method in TRANSFER_METHODS:
    kwargs["base_classes"] = base_classes
  return registry.make(cfg.method, backbone(cfg), setting=cfg.setting,
                       **kwargs)


def pretrain_learner(cfg: Config, base_classes: int):
  """Meta-Baseline's pretraining stage: Baseline's learner (linear
  classifier over ``base_classes``) on the same backbone."""
  return registry.make("baseline", backbone(cfg), setting=cfg.setting,
                       ways=cfg.ways, base_classes=base_classes)


def default() -> Config:
  """The short shared protocol: 5-way 1-shot, 500 steps of 8 tasks."""
  return Config()


def tiny() -> Config:
  """Seconds-long settings for tests (few filters, steps and tasks)."""
  return Config(filters=4, iterations=4, meta_batch=2, queries=2,
                eval_tasks=6, eval_batch=3, steps_per_call=2,
                checkpoint_every=2, image_size=16)


#: the paper cells with a named config: method -> Omniglot (ways, shots).
PAPER_CELLS = {
    m: ((5, 1), (5, 5), (20, 1), (20, 5))
    for m in ("maml", "fomaml", "metasgd", "mamlpp", "reptile", "imaml",
              "protonet")}
PAPER_CELLS["anil"] = ((20, 1), (20, 5))
# The transfer baselines have recorded protocols (paper_config('baseline', 5,
# 1) builds Chen et al.'s Omniglot run) but no published Omniglot number to
# compare with, so no named paper cell.


def paper_iterations(paper) -> int | None:
  """A paper cell's full budget in meta-steps: its protocol's
  ``iterations``, else what its outer loop states (``meta_iters``, or
  ``epochs`` of ``episodes_per_epoch``/``batches_per_epoch``)."""
  if "iterations" in paper.protocol:
    return int(paper.protocol["iterations"])
  outer = paper.outer
  if "meta_iters" in outer:
    return int(outer["meta_iters"])
  for per_epoch in ("episodes_per_epoch", "batches_per_epoch"):
    if "epochs" in outer and per_epoch in outer:
      return int(outer["epochs"]) * int(outer[per_epoch])
  return None


def paper_config(method: str, ways: int, shots: int, *,
                 norm: str | None = None,
                 eval_query_context: str | None = None) -> Config:
  """The official code's protocol for one Omniglot cell, at full budget.

  Network, batch norm, data, episodes, optimiser and budget come from
  ``metajax.configs.get(method, 'omniglot_<N>way_<K>shot')``: its
  ``protocol`` (in this config's field names), and its ``outer`` (meta-batch,
  meta-learning rate, iterations, training and test episodes, ``filters``,
  ``max_pool``). ``norm`` and ``eval_query_context`` replace the cell's
  (Reptile's non-transductive numbers: ``eval_query_context='support'``). Override the
  budget with ``--set iterations=...``: the results file then says
  "shortened".
  """
  setting = f"omniglot_{ways}way_{shots}shot"
  paper = paper_configs.get(method, setting)
  if not paper.protocol:
    raise ValueError(
        f"{method} has no recorded protocol for {setting}; its paper "
        f"cells with one: {PAPER_CELLS.get(method, ())}")
  o = paper.outer
  fields = {f.name for f in dataclasses.fields(Config)}
  kw = {k: v for k, v in paper.protocol.items() if k in fields}
  if "filters" in o:
    kw.setdefault("filters", o["filters"])
  if "max_pool" in o:
    kw.setdefault("downsample", "maxpool" if o["max_pool"] else "stride")
  for src, dst in (("meta_batch", "meta_batch"), ("meta_lr", "meta_lr"),
                   ("pretrain_batch", "pretrain_batch"),
                   ("train_shots", "train_shots"),
                   ("train_queries", "train_queries"),
                   ("eval_queries", "queries"), ("eval_tasks", "eval_tasks"),
                   ("adam_eps", "adam_eps")):
    if src in o:
      kw[dst] = o[src]
  if o.get("train_ways", ways) != ways:
    kw["train_ways"] = o["train_ways"]
  iterations = paper_iterations(paper)
  if iterations is not None:
    kw["iterations"] = iterations
  if norm is not None:
    kw["norm"] = norm
  if eval_query_context is not None:
    kw["eval_query_context"] = eval_query_context
  if method not in MASKED_METHODS:
    kw.pop("adapt_norm", None)  # ANIL adapts the head alone anyway
  cfg = Config(method=method, ways=ways, shots=shots, eval_batch=20,
               checkpoint_every=500, steps_per_call=50, **kw)
  return cfg


def _paper_variants() -> dict:
  out = {}
  for method, cells in PAPER_CELLS.items():
    for ways, shots in cells:
      name = f"paper_{method}_{ways}w{shots}s"
      out[name] = functools.partial(paper_config, method, ways, shots)
      if method == "reptile":
        out[name + "_nontransductive"] = functools.partial(
            paper_config, method, ways, shots, eval_query_context="support")
  return out


VARIANTS = {"default": default, "tiny": tiny, **_paper_variants()}
