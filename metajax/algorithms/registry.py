"""A registry of meta-learners by name, with the papers' hyperparameters.

``make(name, model, setting=..., **overrides)`` builds a learner;
:func:`register` adds one (``factory(model, **kwargs) -> Learner``).
Registered here:

========== ============================================ =====================
name       method                                       class / constructor
========== ============================================ =====================
maml       MAML, exact second order (Finn et al. 2017)  ``MAML``
fomaml     first-order MAML (Finn et al. 2017)          :func:`fomaml`
anil       ANIL, head-only inner loop (Raghu et al.     :func:`anil`
           2020)
metasgd    Meta-SGD, learned per-parameter inner rates  :func:`metasgd`
           (Li et al. 2017)
mamlpp     MAML++ (Antoniou et al. 2019)                ``MAMLPlusPlus``
reptile    Reptile (Nichol et al. 2018)                 ``Reptile``
imaml      iMAML (Rajeswaran et al. 2019)               ``IMAML``
protonet   Prototypical Networks (Snell et al. 2017)    ``ProtoNet.paper``
matchingnet Matching Networks (Vinyals et al. 2016)     ``MatchingNet.paper``
r2d2       R2-D2 ridge head (Bertinetto et al. 2019)    ``R2D2.paper``
metaoptnet MetaOptNet-SVM (Lee et al. 2019)             ``MetaOptNet.paper``
metaoptnet_ridge MetaOptNet-ridge (Lee et al. 2019)     ``MetaOptNet.paper``
cnp        Conditional Neural Process (Garnelo et al.   ``CNP.paper``
           2018); ``model`` is ignored (pass ``None``)
========== ============================================ =====================

Every factory takes ``setting`` (a key of the learner's ``PAPER_DEFAULTS``,
e.g. ``'omniglot_5way_1shot'``) and keyword overrides; the defaults of each
setting are the paper's (see each table below / in each module, with the
source). Outer-loop hyperparameters (meta learning rate, meta-batch,
iterations) are in the matching ``PAPER_OUTER`` tables.
"""
from __future__ import annotations

from typing import Any, Callable

from metajax.algorithms.cnp import CNP
from metajax.algorithms.imaml import IMAML
from metajax.core.learner import Learner
from metajax.algorithms.maml import MAML
from metajax.algorithms.maml_plus_plus import MAMLPlusPlus
from metajax.algorithms.matching import MatchingNet
from metajax.algorithms.metaoptnet import MetaOptNet
from metajax.algorithms.protonet import ProtoNet
from metajax.algorithms.r2d2 import R2D2
from metajax.algorithms.reptile import Reptile

Factory = Callable[..., Learner]

# MAML (Finn et al. 2017, Sec. 5 and cbfinn/maml's README commands):
# sinusoid: 1 step, alpha = 0.01, 10 steps at test; Omniglot 5-way: 1 step,
# alpha = 0.4; 20-way: 5 steps, alpha = 0.1; mini-ImageNet: 5 steps,
# alpha = 0.01, 10 steps at test. (Omniglot is also tested with 10 steps.)
# ANIL (Raghu et al. 2020) and first-order MAML use the same values.
MAML_PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sinusoid": dict(loss="mse", inner_steps=1, inner_lr=0.01,
                     eval_inner_steps=10),
    "omniglot_5way": dict(loss="cross_entropy", inner_steps=1, inner_lr=0.4,
                          eval_inner_steps=10),
    "omniglot_20way": dict(loss="cross_entropy", inner_steps=5, inner_lr=0.1,
                           eval_inner_steps=10),
    "miniimagenet_5way": dict(loss="cross_entropy", inner_steps=5,
                              inner_lr=0.01, eval_inner_steps=10),
}
MAML_PAPER_OUTER: dict[str, dict[str, Any]] = {
    "sinusoid": dict(meta_lr=1e-3, meta_batch=25, meta_iters=70_000),
    "omniglot_5way": dict(meta_lr=1e-3, meta_batch=32, meta_iters=60_000),
    "omniglot_20way": dict(meta_lr=1e-3, meta_batch=16, meta_iters=60_000),
    "miniimagenet_5way": dict(meta_lr=1e-3, meta_batch=4, meta_iters=60_000),
}
# Meta-SGD (Li et al. 2017, Sec. 4): one inner step with learned
# per-parameter rates; the rates start at the MAML step size here (the paper
# draws them uniformly from [0.005, 0.1] for regression).
METASGD_PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sinusoid": dict(loss="mse", inner_steps=1, inner_lr=0.01,
                     eval_inner_steps=1),
    "omniglot_5way": dict(loss="cross_entropy", inner_steps=1, inner_lr=0.4,
                          eval_inner_steps=1),
    "omniglot_20way": dict(loss="cross_entropy", inner_steps=1, inner_lr=0.1,
                           eval_inner_steps=1),
    "miniimagenet_5way": dict(loss="cross_entropy", inner_steps=1,
                              inner_lr=0.01, eval_inner_steps=1),
}


def head_only(path: str) -> bool:
  """ANIL's adaptation mask: parameters under the ``head`` layer."""
  return path.startswith("head")


def _settings(table: dict, setting: str | None, default: str) -> dict:
  setting = default if setting is None else setting
  if setting not in table:
    raise ValueError(
        f"unknown paper setting {setting!r}; choose one of {sorted(table)}")
  return dict(table[setting])


def maml(model, *, setting: str | None = None, **overrides) -> MAML:
  """MAML (exact second-order meta-gradients) with the paper's defaults."""
  return MAML(model=model, **{**_settings(MAML_PAPER_DEFAULTS, setting,
                                          "sinusoid"), **overrides})


def fomaml(model, *, setting: str | None = None, **overrides) -> MAML:
  """First-order MAML: ``MAML(first_order=True)`` (the inner gradients are
  constants, so the meta-gradient is ``grad L_Q`` at the adapted weights)."""
  return maml(model, setting=setting, **{"first_order": True, **overrides})


def anil(model, *, setting: str | None = None, head: str = "head",
         **overrides) -> MAML:
  """ANIL (Raghu et al. 2020, "Rapid Learning or Feature Reuse?"): MAML whose
  inner loop adapts only the final layer (``head``); the body is still
  meta-learned through the outer loop.

  ``head`` names the head layer of the model's parameters (``'head'`` for
  metajax's models).
  """
  mask = head_only if head == "head" else (lambda p: p.startswith(head))
  return maml(model, setting=setting, **{"adapt_mask": mask, **overrides})


def metasgd(model, *, setting: str | None = None, **overrides) -> MAML:
  """Meta-SGD (Li et al. 2017): ``phi = theta - alpha (.) grad L_S(theta)``
  with ``alpha`` a meta-learned array per parameter
  (``MAML(learn_inner_lr='per_param')``)."""
  return MAML(model=model, **{**_settings(METASGD_PAPER_DEFAULTS, setting,
                                          "sinusoid"),
                              "learn_inner_lr": "per_param", **overrides})


def mamlpp(model, *, setting: str | None = None, **overrides) -> MAMLPlusPlus:
  """MAML++ with the authors' released configuration for ``setting``."""
  return MAMLPlusPlus(model=model, **{
      **_settings(MAMLPlusPlus.PAPER_DEFAULTS, setting,
                  "miniimagenet_5way_1shot"), **overrides})


def reptile(model, *, setting: str | None = None, **overrides) -> Reptile:
  """Reptile with the paper's hyperparameters for ``setting``."""
  return Reptile(model=model, **{
      **_settings(Reptile.PAPER_DEFAULTS, setting, "omniglot_5way_1shot"),
      **overrides})


def imaml(model, *, setting: str | None = None, **overrides) -> IMAML:
  """iMAML with the paper's hyperparameters for ``setting``."""
  return IMAML(model=model, **{
      **_settings(IMAML.PAPER_DEFAULTS, setting, "omniglot_5way"),
      **overrides})


_REGISTRY: dict[str, Factory] = {}


def register(name: str, factory: Factory, *, overwrite: bool = False) -> None:
  """Registers ``factory(model, **kwargs) -> Learner`` under ``name``.

  Raises:
    ValueError: ``name`` is empty or taken (unless ``overwrite``), or
      ``factory`` is not callable.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"learner name must be a non-empty string, got {name!r}")
  if not callable(factory):
    raise ValueError(f"factory for {name!r} is not callable: {factory!r}")
  if name in _REGISTRY and not overwrite:
    raise ValueError(
        f"learner {name!r} is already registered; pass overwrite=True to "
        "replace it")
  _REGISTRY[name] = factory


def get(name: str) -> Factory:
  """The factory registered under ``name`` (``ValueError`` if unknown)."""
  if name not in _REGISTRY:
    raise ValueError(
        f"unknown learner {name!r}; registered: {', '.join(names())}")
  return _REGISTRY[name]


def make(name: str, model, **kwargs) -> Learner:
  """``get(name)(model, **kwargs)``."""
  return get(name)(model, **kwargs)


def names() -> tuple[str, ...]:
  """The registered learner names, sorted."""
  return tuple(sorted(_REGISTRY))


for _name, _factory in (("maml", maml), ("fomaml", fomaml), ("anil", anil),
                        ("metasgd", metasgd), ("mamlpp", mamlpp),
                        ("reptile", reptile), ("imaml", imaml)):
  register(_name, _factory)
del _name, _factory


def _metaoptnet_ridge(model, **kw) -> MetaOptNet:
  return MetaOptNet.paper(model, **{"head": "ridge", **kw})


register("protonet", ProtoNet.paper)
register("matchingnet", MatchingNet.paper)
register("r2d2", R2D2.paper)
register("metaoptnet", MetaOptNet.paper)
register("metaoptnet_ridge", _metaoptnet_ridge)
register("cnp", CNP.paper)
