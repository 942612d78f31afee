"""Protocol, budget and per-method settings of the Omniglot experiment.

The default budget is a *short* run (a few hundred meta-steps of 8 tasks
with a 32-filter conv-4) that finishes in minutes on a laptop CPU, so every
method can be compared on the same protocol; the papers' budgets are tens of
thousands of steps with 64 filters (``--iterations``, ``--filters``,
``--meta-batch``). Inner-loop settings are each paper's Omniglot values
(:mod:`metajax.algorithms.registry` tables); all methods share the outer optimiser
Adam(1e-3) except Reptile, whose outer update is its own (SGD on
``theta - phi`` with a linearly annealed step).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import optax

from metajax.models import Conv4


@dataclasses.dataclass
class Config:
  method: str = "maml"
  ways: int = 5
  shots: int = 1
  queries: int = 15
  split: str = "vinyals"        # 'vinyals' | 'maml' | 'lake'
  rotation: str = "classes"     # 'classes' | 'per_task' | 'none'
  image_size: int = 28
  filters: int = 32
  iterations: int = 500
  meta_batch: int = 8
  meta_lr: float = 1e-3
  eval_tasks: int = 600
  eval_seed: int = 0
  eval_steps: int | None = None  # None: the learner's own test-time steps
  eval_batch: int = 50
  seed: int = 0
  steps_per_call: int = 50
  checkpoint_every: int = 250
  task_map: str = "map"
  chunk_size: int | None = None


def tiny(method: str) -> Config:
  """Seconds-long settings for tests (few filters, steps and tasks)."""
  return Config(method=method, filters=4, iterations=4, meta_batch=2,
                queries=2, eval_tasks=6, eval_batch=3, steps_per_call=2,
                checkpoint_every=2, image_size=16)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
  head: bool                                  # conv-4 with a linear head?
  setting: Callable[[Config], str | None]     # paper setting name
  extra: Callable[[Config], dict] = lambda cfg: {}
  outer: Callable[[Config, Any], optax.GradientTransformation] | None = None

  def learner_kwargs(self, cfg: Config) -> dict:
    kw = dict(self.extra(cfg))
    setting = self.setting(cfg)
    if setting is not None:
      kw["setting"] = setting
    return kw

  def optimizer(self, cfg: Config, learner) -> optax.GradientTransformation:
    if self.outer is not None:
      return self.outer(cfg, learner)
    return optax.adam(cfg.meta_lr)


def _maml_setting(cfg: Config) -> str:
  return "omniglot_20way" if cfg.ways >= 20 else "omniglot_5way"


def _shot_setting(cfg: Config) -> str:
  way = "20way" if cfg.ways >= 20 else "5way"
  return f"omniglot_{way}_{'5shot' if cfg.shots >= 5 else '1shot'}"


def _reptile_outer(cfg: Config, learner) -> optax.GradientTransformation:
  # The paper's linearly annealed meta step (1 -> 0), over this run's length.
  return learner.outer_optimizer(meta_iters=cfg.iterations)


def _ways(cfg: Config) -> dict:
  return {"ways": cfg.ways}


METHODS: dict[str, MethodSpec] = {
    "maml": MethodSpec(True, _maml_setting, _ways),
    "fomaml": MethodSpec(True, _maml_setting, _ways),
    "anil": MethodSpec(True, _maml_setting, _ways),
    "metasgd": MethodSpec(True, _maml_setting, _ways),
    "mamlpp": MethodSpec(True, lambda cfg: f"omniglot_{'20' if cfg.ways >= 20 else '5'}way_1shot", _ways),
    "reptile": MethodSpec(True, _shot_setting, _ways, outer=_reptile_outer),
    "imaml": MethodSpec(True, _maml_setting, _ways),
    # Metric and closed-form heads on conv-4 features. Their papers train
    # with more ways than they test (ProtoNets 60, R2-D2 60 for Omniglot);
    # here every method trains and tests with --ways so the protocol is one.
    "protonet": MethodSpec(False, lambda cfg: "omniglot", _ways),
    "matchingnet": MethodSpec(False, lambda cfg: "omniglot"),
    "r2d2": MethodSpec(False, lambda cfg: "omniglot", _ways),
    "metaoptnet": MethodSpec(False, lambda cfg: "miniimagenet", _ways),
    "metaoptnet_ridge": MethodSpec(False, lambda cfg: "miniimagenet", _ways),
}


def method_spec(name: str) -> MethodSpec:
  if name not in METHODS:
    raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
  return METHODS[name]


def backbone(cfg: Config, *, head: bool) -> Conv4:
  """Conv-4 with ``cfg.filters`` channels; a ``cfg.ways`` head or features."""
  return Conv4(num_outputs=cfg.ways if head else None, filters=cfg.filters)


def describe(learner) -> dict:
  """The learner's settings as JSON-friendly strings/numbers."""
  out = {"class": type(learner).__name__}
  if dataclasses.is_dataclass(learner):
    for f in dataclasses.fields(learner):
      v = getattr(learner, f.name)
      out[f.name] = v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)[:200]
  return out
