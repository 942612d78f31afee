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
"""
from __future__ import annotations

import dataclasses

from experiments import common
from metajax import configs as paper_configs
from metajax.algorithms import registry
from metajax.core import task_map as task_map_lib
from metajax.data import omniglot, sampler, splits
from metajax.models import Conv4
from metajax.models import conv4 as conv4_lib
from metajax.models import layers

#: learners that adapt a linear head on conv-4 (one output per class).
HEAD_METHODS = ("maml", "fomaml", "anil", "metasgd", "mamlpp", "reptile",
                "imaml")
#: metric and closed-form learners on conv-4 features (no head).
FEATURE_METHODS = ("protonet", "matchingnet", "r2d2", "metaoptnet",
                   "metaoptnet_ridge")
METHODS = HEAD_METHODS + FEATURE_METHODS
#: config fields that override the paper's learner hyperparameters.
LEARNER_OVERRIDES = ("inner_lr", "inner_steps", "eval_inner_steps")


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
    filters, blocks, downsample, norm, features: the conv-4 backbone
      (:class:`metajax.models.Conv4`): channels, conv blocks, ``'maxpool'``
      or ``'stride'`` downsampling, batch-norm policy, and whether the head
      (or the metric learners) see the ``'flatten'``-ed map or its spatial
      mean (``'pool'``).
    inner_lr, inner_steps, eval_inner_steps: the learner's inner loop;
      ``None``: the paper's values.
    iterations: meta-training steps.
    meta_batch: tasks per meta-step.
    meta_lr: Adam's learning rate (not Reptile's: see the module docstring).
    eval_tasks: test tasks (600, as MAML and ProtoNets).
    eval_seed: the test-task stream (the same tasks for every method).
    eval_steps: inner steps at test time; ``None``: the learner's own.
    eval_batch: test tasks per compiled call.
    seed: initialisation and training tasks.
    steps_per_call: meta-steps compiled into one call.
    checkpoint_every: meta-steps between checkpoints.
    task_map, chunk_size: how a meta-batch's tasks are mapped
      (:mod:`metajax.core.task_map`).
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
  image_size: int = 28
  filters: int = 32
  blocks: int = 4
  downsample: str = "maxpool"
  norm: str = "transductive"
  features: str = "flatten"
  inner_lr: float | None = None
  inner_steps: int | None = None
  eval_inner_steps: int | None = None
  iterations: int = 500
  meta_batch: int = 8
  meta_lr: float = 1e-3
  eval_tasks: int = 600
  eval_seed: int = 0
  eval_steps: int | None = None
  eval_batch: int = 50
  seed: int = 0
  steps_per_call: int = 50
  checkpoint_every: int = 250
  task_map: str = "map"
  chunk_size: int | None = None

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
    common.check_int("blocks", self.blocks, 1)
    common.check_int("image_size", self.image_size, 2 ** self.blocks)
    common.check_int("filters", self.filters, 1)
    common.check_choice("downsample", self.downsample, conv4_lib.DOWNSAMPLE)
    common.check_choice("features", self.features, conv4_lib.FEATURES)
    common.check_choice("norm", self.norm, layers.NORMS)
    if self.inner_lr is not None:
      common.check_positive("inner_lr", self.inner_lr)
    if self.inner_steps is not None:
      common.check_int("inner_steps", self.inner_steps, 1)
    if self.eval_inner_steps is not None:
      common.check_int("eval_inner_steps", self.eval_inner_steps, 0)
    common.check_int("iterations", self.iterations, 1)
    common.check_int("meta_batch", self.meta_batch, 1)
    common.check_positive("meta_lr", self.meta_lr)
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


def backbone(cfg: Config) -> Conv4:
  """Conv-4 with a head of ``ways`` outputs (head methods) or features."""
  return Conv4(num_outputs=cfg.ways if cfg.method in HEAD_METHODS else None,
               filters=cfg.filters, blocks=cfg.blocks,
               downsample=cfg.downsample, norm=cfg.norm,
               features=cfg.features)


def build_learner(cfg: Config, *, overrides: bool = True):
  """The learner of ``cfg.method`` with the paper's values for ``cfg.setting``.

  ``ways`` is the episodes' (metric learners: the larger of training and
  test ways, their logits' static width), except for Matching Networks,
  whose logits follow the support set. With ``overrides`` the config's
  non-``None`` :data:`LEARNER_OVERRIDES` replace the paper's values.
  """
  kwargs = {}
  if cfg.method != "matchingnet":
    kwargs["ways"] = max(cfg.ways, cfg.episodes(train=True)[0])
  if overrides:
    kwargs.update({name: getattr(cfg, name) for name in LEARNER_OVERRIDES
                   if getattr(cfg, name) is not None})
  return registry.make(cfg.method, backbone(cfg), setting=cfg.setting,
                       **kwargs)


def default() -> Config:
  """The short shared protocol: 5-way 1-shot, 500 steps of 8 tasks."""
  return Config()


def tiny() -> Config:
  """Seconds-long settings for tests (few filters, steps and tasks)."""
  return Config(filters=4, iterations=4, meta_batch=2, queries=2,
                eval_tasks=6, eval_batch=3, steps_per_call=2,
                checkpoint_every=2, image_size=16)


VARIANTS = {"default": default, "tiny": tiny}
