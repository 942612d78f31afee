"""A registry of meta-learners by name, built with the papers' hyperparameters.

``make(name, model, setting=..., **overrides)`` builds a learner: the
constructor arguments of ``setting`` come from
``metajax.configs.get(name, setting).learner`` (every value there names its
source), ``overrides`` replace single ones. This is the one place that
applies a paper setting; the outer-loop values of the same setting are
``metajax.configs.get(name, setting).outer``. :func:`register` adds a
learner (``factory(model, **kwargs) -> Learner``). Registered here:

================ ================================== =========================
name             method                             default ``setting``
================ ================================== =========================
maml             MAML, second order (Finn et al.    ``sinusoid_10shot``
                 2017): ``MAML``
fomaml           first-order MAML (Finn et al.      ``sinusoid_10shot``
                 2017): ``MAML(first_order=True)``
anil             ANIL, head-only inner loop (Raghu  ``sinusoid_10shot``
                 et al. 2020): ``MAML(adapt_mask)``
boil             BOIL, body-only inner loop (Oh et  ``omniglot_5way_1shot``
                 al. 2021): ``MAML(adapt_mask)``
cavia            CAVIA, input context adapted       ``sinusoid_10shot``
                 (Zintgraf et al. 2019): ``CAVIA``
lstm_metalearner the LSTM meta-learner (Ravi &      ``omniglot_5way_1shot``
                 Larochelle 2017)
metasgd          Meta-SGD, per-parameter inner      ``sinusoid_10shot``
                 rates (Li et al. 2017): ``MAML``
mamlpp           MAML++ (Antoniou et al. 2019)      ``miniimagenet_5way_1shot``
reptile          Reptile (Nichol et al. 2018)       ``omniglot_5way_1shot``
imaml            iMAML (Rajeswaran et al. 2019)     ``omniglot_5way_1shot``
protonet         Prototypical Networks (Snell et    ``omniglot_5way_1shot``
                 al. 2017)
matchingnet      Matching Networks (Vinyals et al.  ``omniglot_5way_1shot``
                 2016)
snail            SNAIL (Mishra et al. 2018)         ``omniglot_5way_1shot``
r2d2             R2-D2 (Bertinetto et al. 2019)     ``miniimagenet_5way_1shot``
metaoptnet       MetaOptNet-SVM (Lee et al. 2019)   ``miniimagenet_5way_1shot``
metaoptnet_ridge MetaOptNet-RR (Lee et al. 2019)    ``miniimagenet_5way_1shot``
cnp              Conditional Neural Process         ``gp_1d``
                 (Garnelo et al. 2018); ``model``
                 must be ``None``
np               latent Neural Process (Garnelo et   ``gp_1d``
                 al. 2018b); ``model`` ``None``
anp              Attentive Neural Process (Kim et    ``gp_1d``
                 al. 2019); ``model`` ``None``
baseline         Baseline: pretraining, linear      ``omniglot_5way_1shot``
                 head (Chen et al. 2019)
baseline_pp      Baseline++: cosine classifier and  ``omniglot_5way_1shot``
                 head (Chen et al. 2019)
rfs_simple       RFS-simple: logistic regression    ``omniglot_5way_1shot``
                 (Tian et al. 2020)
simpleshot       SimpleShot: CL2N nearest centroid  ``omniglot_5way_1shot``
                 (Wang et al. 2019)
meta_baseline    Meta-Baseline: cosine centroids,   ``omniglot_5way_1shot``
                 learned temperature (Chen et al.
                 2021)
================ ================================== =========================

The defaults (:data:`DEFAULT_SETTINGS`) are the cells the learners defaulted
to before the settings moved to :mod:`metajax.configs`, so a call without
``setting`` keeps its meaning. The embedding learners (``protonet`` ...
``metaoptnet_ridge``, the transfer baselines) take ``model=None`` for their
default backbone. :func:`references` lists every name with its paper.
"""
from __future__ import annotations

from typing import Any, Callable

from metajax import configs
from metajax.algorithms.cavia import CAVIA
from metajax.algorithms.cnp import CNP
from metajax.algorithms.imaml import IMAML
from metajax.algorithms.lstm_meta import LSTMMetaLearner
from metajax.core.learner import Learner
from metajax.algorithms.maml import MAML
from metajax.algorithms.maml_plus_plus import MAMLPlusPlus
from metajax.algorithms.matching import MatchingNet
from metajax.algorithms.metaoptnet import MetaOptNet
from metajax.algorithms.neural_process import NeuralProcess
from metajax.algorithms.protonet import ProtoNet
from metajax.algorithms.r2d2 import R2D2
from metajax.algorithms.reptile import Reptile
from metajax.algorithms.snail import SNAIL
from metajax.algorithms.transfer import MetaBaseline, TransferLearner

Factory = Callable[..., Learner]

#: the ``setting`` each factory uses when none is given.
DEFAULT_SETTINGS: dict[str, str] = {
    "maml": "sinusoid_10shot",
    "fomaml": "sinusoid_10shot",
    "anil": "sinusoid_10shot",
    "boil": "omniglot_5way_1shot",
    "cavia": "sinusoid_10shot",
    "lstm_metalearner": "omniglot_5way_1shot",
    "metasgd": "sinusoid_10shot",
    "mamlpp": "miniimagenet_5way_1shot",
    "reptile": "omniglot_5way_1shot",
    "imaml": "omniglot_5way_1shot",
    "protonet": "omniglot_5way_1shot",
    "matchingnet": "omniglot_5way_1shot",
    "snail": "omniglot_5way_1shot",
    "r2d2": "miniimagenet_5way_1shot",
    "metaoptnet": "miniimagenet_5way_1shot",
    "metaoptnet_ridge": "miniimagenet_5way_1shot",
    "cnp": "gp_1d",
    "np": "gp_1d",
    "anp": "gp_1d",
    "baseline": "omniglot_5way_1shot",
    "baseline_pp": "omniglot_5way_1shot",
    "rfs_simple": "omniglot_5way_1shot",
    "simpleshot": "omniglot_5way_1shot",
    "meta_baseline": "omniglot_5way_1shot",
}

#: each registered method's paper (``references()``).
REFERENCES: dict[str, str] = {
    "maml": "Finn, Abbeel & Levine, Model-Agnostic Meta-Learning, ICML 2017",
    "fomaml": "Finn, Abbeel & Levine, ICML 2017 (first-order approximation)",
    "anil": "Raghu, Raghu, Bengio & Vinyals, Rapid Learning or Feature "
            "Reuse?, ICLR 2020",
    "boil": "Oh, Yoo, Kim & Yun, BOIL: Towards Representation Change for "
            "Few-shot Learning, ICLR 2021",
    "cavia": "Zintgraf, Shiarlis, Kurin, Hofmann & Whiteson, Fast Context "
             "Adaptation via Meta-Learning, ICML 2019",
    "lstm_metalearner": "Ravi & Larochelle, Optimization as a Model for "
                        "Few-Shot Learning, ICLR 2017",
    "metasgd": "Li, Zhou, Chen & Li, Meta-SGD, arXiv:1707.09835, 2017",
    "mamlpp": "Antoniou, Edwards & Storkey, How to Train Your MAML, ICLR 2019",
    "reptile": "Nichol, Achiam & Schulman, On First-Order Meta-Learning "
               "Algorithms, arXiv:1803.02999, 2018",
    "imaml": "Rajeswaran, Finn, Kakade & Levine, Meta-Learning with Implicit "
             "Gradients, NeurIPS 2019",
    "protonet": "Snell, Swersky & Zemel, Prototypical Networks, NeurIPS 2017",
    "matchingnet": "Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, "
                   "Matching Networks, NeurIPS 2016",
    "snail": "Mishra, Rohaninejad, Chen & Abbeel, A Simple Neural Attentive "
             "Meta-Learner, ICLR 2018",
    "r2d2": "Bertinetto, Henriques, Torr & Vedaldi, Meta-learning with "
            "Differentiable Closed-form Solvers, ICLR 2019",
    "metaoptnet": "Lee, Maji, Ravichandran & Soatto, Meta-Learning with "
                  "Differentiable Convex Optimization, CVPR 2019 (SVM head)",
    "metaoptnet_ridge": "Lee, Maji, Ravichandran & Soatto, CVPR 2019 (ridge "
                        "regression head)",
    "cnp": "Garnelo et al., Conditional Neural Processes, ICML 2018",
    "np": "Garnelo et al., Neural Processes, arXiv:1807.01622, 2018",
    "anp": "Kim et al., Attentive Neural Processes, ICLR 2019",
    "baseline": "Chen, Liu, Kira, Wang & Huang, A Closer Look at Few-shot "
                "Classification, ICLR 2019 (Baseline)",
    "baseline_pp": "Chen, Liu, Kira, Wang & Huang, ICLR 2019 (Baseline++)",
    "rfs_simple": "Tian, Wang, Krishnan, Tenenbaum & Isola, Rethinking "
                  "Few-Shot Image Classification, ECCV 2020 (RFS-simple)",
    "simpleshot": "Wang, Chao, Weinberger & van der Maaten, SimpleShot, "
                  "arXiv:1911.04623, 2019",
    "meta_baseline": "Chen, Liu, Xu, Darrell & Wang, Meta-Baseline, ICCV 2021",
}


def head_only(path: str) -> bool:
  """ANIL's adaptation mask: parameters under the ``head`` layer."""
  return path.startswith("head")


def body_only(path: str) -> bool:
  """BOIL's adaptation mask: every parameter except the ``head`` layer's."""
  return not path.startswith("head")


def paper_kwargs(method: str, setting: str | None = None) -> dict[str, Any]:
  """Constructor arguments of ``method``'s paper ``setting`` (default:
  ``DEFAULT_SETTINGS[method]``); ``ValueError`` names the valid settings."""
  setting = DEFAULT_SETTINGS[method] if setting is None else setting
  return dict(configs.get(method, setting).learner)


def maml(model, *, setting: str | None = None, **overrides) -> MAML:
  """MAML (exact second-order meta-gradients) with the paper's values."""
  return MAML(model=model, **{**paper_kwargs("maml", setting), **overrides})


def fomaml(model, *, setting: str | None = None, **overrides) -> MAML:
  """First-order MAML: ``MAML(first_order=True)`` (the inner gradients are
  constants, so the meta-gradient is ``grad L_Q`` at the adapted weights)."""
  return MAML(model=model, **{**paper_kwargs("fomaml", setting), **overrides})


def anil(model, *, setting: str | None = None, head: str = "head",
         **overrides) -> MAML:
  """ANIL (Raghu et al. 2020, "Rapid Learning or Feature Reuse?"): MAML whose
  inner loop adapts only the final layer (``head``); the body is still
  meta-learned through the outer loop.

  ``head`` names the head layer of the model's parameters (``'head'`` for
  metajax's models).
  """
  mask = head_only if head == "head" else (lambda p: p.startswith(head))
  return MAML(model=model, **{**paper_kwargs("anil", setting),
                              "adapt_mask": mask, **overrides})


def boil(model, *, setting: str | None = None, head: str = "head",
         **overrides) -> MAML:
  """BOIL (Oh et al. 2021, "BOIL: Towards Representation Change for
  Few-shot Learning"): MAML whose inner loop adapts the body and freezes the
  head (``head`` names the head layer, ``'head'`` for metajax's models); the
  head is still meta-learned by the outer loop."""
  mask = body_only if head == "head" else (lambda p: not p.startswith(head))
  return MAML(model=model, **{**paper_kwargs("boil", setting),
                              "adapt_mask": mask, **overrides})


def cavia(model, *, setting: str | None = None, **overrides) -> CAVIA:
  """CAVIA (Zintgraf et al. 2019): only ``num_context`` input context
  parameters adapt, from zero for every task; ``model`` is wrapped in
  :class:`metajax.models.WithContext`."""
  return CAVIA(model=model, **{**paper_kwargs("cavia", setting),
                               **overrides})


def lstm_metalearner(model, *, setting: str | None = None,
                     **overrides) -> LSTMMetaLearner:
  """The LSTM meta-learner (Ravi & Larochelle 2017): a coordinate-wise LSTM
  whose cell state is ``model``'s parameters, first order by default."""
  return LSTMMetaLearner(model=model, **{
      **paper_kwargs("lstm_metalearner", setting), **overrides})


def metasgd(model, *, setting: str | None = None, **overrides) -> MAML:
  """Meta-SGD (Li et al. 2017): ``phi = theta - alpha (.) grad L_S(theta)``
  with ``alpha`` a meta-learned array per parameter
  (``MAML(learn_inner_lr='per_param')``, in the paper settings)."""
  return MAML(model=model, **{**paper_kwargs("metasgd", setting),
                              **overrides})


def mamlpp(model, *, setting: str | None = None, **overrides) -> MAMLPlusPlus:
  """MAML++ with the authors' released configuration for ``setting``."""
  return MAMLPlusPlus(model=model, **{**paper_kwargs("mamlpp", setting),
                                      **overrides})


def reptile(model, *, setting: str | None = None, **overrides) -> Reptile:
  """Reptile with the paper's hyperparameters for ``setting``."""
  return Reptile(model=model, **{**paper_kwargs("reptile", setting),
                                 **overrides})


def imaml(model, *, setting: str | None = None, **overrides) -> IMAML:
  """iMAML with the paper's hyperparameters for ``setting``."""
  return IMAML(model=model, **{**paper_kwargs("imaml", setting),
                               **overrides})


def _with_backbone(cls, method: str, model, setting, overrides):
  # ``model=None`` keeps the class's default backbone (Conv-4 features).
  kw = {**paper_kwargs(method, setting), **overrides}
  if model is not None:
    kw["model"] = model
  return cls(**kw)


def protonet(model=None, *, setting: str | None = None,
             **overrides) -> ProtoNet:
  """Prototypical Networks with the paper's settings (``ways`` is the
  training way count)."""
  return _with_backbone(ProtoNet, "protonet", model, setting, overrides)


def matchingnet(model=None, *, setting: str | None = None,
                **overrides) -> MatchingNet:
  """Matching Networks with the paper's settings."""
  return _with_backbone(MatchingNet, "matchingnet", model, setting, overrides)


def snail(model=None, *, setting: str | None = None, **overrides) -> SNAIL:
  """SNAIL with the paper's sequence model (``ways`` is required)."""
  return _with_backbone(SNAIL, "snail", model, setting, overrides)


def r2d2(model=None, *, setting: str | None = None, **overrides) -> R2D2:
  """R2-D2 with the paper's settings (``ways`` is the training way count)."""
  return _with_backbone(R2D2, "r2d2", model, setting, overrides)


def metaoptnet(model=None, *, setting: str | None = None,
               **overrides) -> MetaOptNet:
  """MetaOptNet-SVM with the paper's settings."""
  return _with_backbone(MetaOptNet, "metaoptnet", model, setting, overrides)


def metaoptnet_ridge(model=None, *, setting: str | None = None,
                     **overrides) -> MetaOptNet:
  """MetaOptNet-RR (the ridge head) with the paper's settings."""
  return _with_backbone(MetaOptNet, "metaoptnet_ridge", model, setting,
                        overrides)


def cnp(model=None, *, setting: str | None = None, **overrides) -> CNP:
  """The CNP with the paper's sizes for ``setting``.

  ``model`` is accepted for the ``factory(model, **kw)`` signature and must
  be ``None``: the CNP builds its own networks.
  """
  if model is not None:
    raise ValueError(
        "CNP builds its own encoder and decoder; pass encoder_sizes / "
        "decoder_sizes instead of a model")
  return CNP(**{**paper_kwargs("cnp", setting), **overrides})


def baseline(model=None, *, setting: str | None = None,
             **overrides) -> TransferLearner:
  """Baseline (Chen et al. 2019): a linear classifier over the base classes
  in pretraining, a new linear head per test task. ``base_classes`` comes
  from the setting (4112 on Omniglot); pass the pretraining sampler's
  ``num_labels`` when the data differ."""
  return _with_backbone(TransferLearner, "baseline", model, setting,
                        overrides)


def baseline_pp(model=None, *, setting: str | None = None,
                **overrides) -> TransferLearner:
  """Baseline++ (Chen et al. 2019): cosine (distLinear) classifier and head."""
  return _with_backbone(TransferLearner, "baseline_pp", model, setting,
                        overrides)


def rfs_simple(model=None, *, setting: str | None = None,
               **overrides) -> TransferLearner:
  """RFS-simple (Tian et al. 2020): logistic regression on L2-normalised
  frozen features."""
  return _with_backbone(TransferLearner, "rfs_simple", model, setting,
                        overrides)


def simpleshot(model=None, *, setting: str | None = None,
               **overrides) -> TransferLearner:
  """SimpleShot (Wang et al. 2019): nearest centroid on CL2N features (set
  the base mean with ``with_feature_mean`` before evaluating)."""
  return _with_backbone(TransferLearner, "simpleshot", model, setting,
                        overrides)


def meta_baseline(model=None, *, setting: str | None = None,
                  **overrides) -> MetaBaseline:
  """Meta-Baseline's meta stage (Chen et al. 2021); its pretraining is
  ``baseline``'s (see :meth:`MetaBaseline.from_pretrained`)."""
  return _with_backbone(MetaBaseline, "meta_baseline", model, setting,
                        overrides)


def _neural_process(method: str, model, setting, overrides) -> NeuralProcess:
  if model is not None:
    raise ValueError(
        f"{method} builds its own encoders and decoder; pass latent_sizes, "
        "deterministic_sizes or decoder_sizes instead of a model")
  return NeuralProcess(**{**paper_kwargs(method, setting), **overrides})


def np_(model=None, *, setting: str | None = None,
        **overrides) -> NeuralProcess:
  """The latent Neural Process (uniform attention on the deterministic
  path) with the notebook's sizes; ``model`` must be ``None``."""
  return _neural_process("np", model, setting, overrides)


def anp(model=None, *, setting: str | None = None,
        **overrides) -> NeuralProcess:
  """The Attentive Neural Process (multihead cross-attention) with the
  notebook's sizes; ``model`` must be ``None``."""
  return _neural_process("anp", model, setting, overrides)


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


def references() -> str:
  """Every registered name with its paper, one per line (learners
  registered by users show ``-``)."""
  width = max(len(n) for n in names())
  return "\n".join(f"{n:<{width}}  {REFERENCES.get(n, '-')}"
                   for n in names())


for _name, _factory in (
    ("maml", maml), ("fomaml", fomaml), ("anil", anil), ("boil", boil),
    ("cavia", cavia), ("lstm_metalearner", lstm_metalearner),
    ("metasgd", metasgd),
    ("mamlpp", mamlpp), ("reptile", reptile), ("imaml", imaml),
    ("protonet", protonet), ("matchingnet", matchingnet), ("snail", snail),
    ("r2d2", r2d2),
    ("metaoptnet", metaoptnet), ("metaoptnet_ridge", metaoptnet_ridge),
    ("cnp", cnp), ("np", np_), ("anp", anp), ("baseline", baseline), ("baseline_pp", baseline_pp),
    ("rfs_simple", rfs_simple), ("simpleshot", simpleshot),
    ("meta_baseline", meta_baseline)):
  register(_name, _factory)
del _name, _factory
