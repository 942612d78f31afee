"""The papers' hyperparameters, in one place and under one key scheme.

Each method's values used to live next to its learner, in tables keyed three
different ways; an experiment that compares methods on one benchmark had to
know every scheme. Here every paper has one module (:mod:`.maml`,
:mod:`.metasgd`, :mod:`.anil`, :mod:`.maml_plus_plus`, :mod:`.reptile`,
:mod:`.imaml`, :mod:`.protonet`, :mod:`.matching`, :mod:`.r2d2`,
:mod:`.metaoptnet`, :mod:`.cnp`, :mod:`.boil`, :mod:`.cavia`,
:mod:`.lstm_meta`, :mod:`.neural_process`, :mod:`.snail`,
:mod:`.transfer`) holding one table
``SETTINGS`` (:mod:`.transfer`: one per method of the family) of
:class:`PaperSetting`, each with the place in the paper or the official code
that its values come from, so a number can be checked rather than trusted.

Keys ("settings"), one scheme for every method:

* ``"<dataset>_<N>way_<K>shot"`` for classification: ``omniglot_5way_1shot``,
  ``omniglot_5way_5shot``, ``omniglot_20way_1shot``, ``omniglot_20way_5shot``,
  ``miniimagenet_5way_1shot``, ``miniimagenet_5way_5shot``, and
  ``tieredimagenet_``, ``cifarfs_``, ``fc100_`` ones where a paper has them.
  Every registered classification method has the four Omniglot keys (the
  shared Omniglot experiment asks for ``omniglot_{ways}way_{shots}shot``);
  where its paper has no such cell the entry's ``note`` says which values
  stand in and why.
* ``"sinusoid_<K>shot"`` (MAML's regression benchmark) and ``"gp_1d"`` (the
  CNP's).

``PaperSetting.learner`` is keyword arguments of the learner's constructor:
``metajax.algorithms.registry.make(method, model, setting=key, **overrides)``
applies them. ``PaperSetting.outer`` describes the outer loop, which no
learner owns; its keys, where the paper gives them:

* ``meta_lr``, ``meta_batch`` (tasks per meta-step), ``meta_iters`` or
  ``epochs`` (with ``episodes_per_epoch``/``batches_per_epoch``),
  ``optimizer`` (``'adam'`` unless stated), and schedules (``lr_decay`` every
  ``lr_decay_every`` steps, ``min_lr``/``total_epochs`` cosine, ``lr_factors``,
  ``meta_step``/``meta_step_final``), ``clip``, ``patience``.
* ``train_ways``, ``train_shots``, ``train_queries``: the meta-training
  episodes (ways and shots only where they differ from the test episode's;
  queries per class as the code drew them); ``eval_queries``,
  ``eval_tasks``: the test protocol where the code fixes it.
* ``filters``, ``max_pool``: the paper's Conv-4 width and downsampling.

``PaperSetting.protocol`` is how the official code ran the cell beyond the
learner and the optimiser, in the Omniglot experiment's field names
(``experiments/omniglot/configs.py``): the network (``filters``,
``downsample``, ``norm``, ``features``, ``head_init``, ``adapt_norm``), the
data (``rotation``, ``eval_rotation``, ``split``) and the optimiser's details
(``adam_eps``, ``lr_decay_every``, validation). ``PaperSetting.published``
holds the published numbers, each with the batch-norm policy it was made
under.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Published:
  """One published number of a paper cell.

  Attributes:
    value: the published metric, in percent for accuracies.
    ci95: its published 95% interval half-width (``None`` if not given).
    where: the table (and paper) it is printed in.
    batch_norm: the batch-norm policies that correspond to how it was made
      (:data:`metajax.models.layers.NORMS`, or ``'non_transductive'``:
      each query scored together with the support set); a run is compared
      with the number of its own policy.
    note: how it was made, where that matters (ensembles, seeds, filters).
    official_code_rerun: the same cell's metric when others ran the official
      code as released, where that is reported (``None`` if not). A run that
      matches it but not ``value`` reproduces the code, not the printed table.
    official_code_rerun_where: where that re-run is reported.
  """
  value: float
  ci95: float | None
  where: str
  batch_norm: tuple[str, ...] = ("transductive",)
  note: str = ""
  official_code_rerun: float | None = None
  official_code_rerun_where: str = ""

  def matches(self, norm: str) -> bool:
    return norm in self.batch_norm

  def to_dict(self) -> dict:
    return {"value": self.value, "ci95": self.ci95, "where": self.where,
            "batch_norm": list(self.batch_norm), "note": self.note,
            "official_code_rerun": self.official_code_rerun,
            "official_code_rerun_where": self.official_code_rerun_where}


@dataclasses.dataclass(frozen=True)
class PaperSetting:
  """One paper cell: learner kwargs, outer-loop values and where they are from.

  Attributes:
    learner: constructor keyword arguments of the learner.
    outer: outer-loop values (see the module docstring for the keys).
    source: the paper's table/section and/or the official code's file and
      flags that the values come from.
    note: where the entry departs from or fills in for the paper, and why.
    protocol: how the official code ran the cell beyond ``learner`` and
      ``outer`` (network, batch norm, data; see the module docstring).
    published: the published numbers (:class:`Published`), one per
      batch-norm policy the paper reports.
  """
  learner: Mapping[str, Any]
  outer: Mapping[str, Any]
  source: str
  note: str = ""
  protocol: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  published: tuple[Published, ...] = ()

  def __post_init__(self):
    # An unsourced number is the thing this package exists to prevent.
    if not self.source.strip():
      raise ValueError("a PaperSetting needs a source")


@dataclasses.dataclass(frozen=True)
class _Method:
  module: str                                    # metajax.configs.<module>
  learner: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  source: str = ""                               # what the variant adds
  # setting -> the variant's own published numbers (replacing the table's)
  published: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
  table: str = "SETTINGS"                        # the module's table


# Registered method name -> its paper's module, plus the constructor switch
# that makes a variant out of a shared table (the values are the paper's).
_METHODS: dict[str, _Method] = {
    "maml": _Method("maml"),
    "fomaml": _Method("maml", {"first_order": True},
                      "first order: cbfinn/maml --stop_grad=True",
                      published={
                          f"omniglot_{w}way_{k}shot": (Published(
                              v, ci, "Nichol et al. 2018 Table 1 (first-order "
                              "MAML, transductive)", ("maml", "transductive")),)
                          for (w, k), (v, ci) in {
                              (5, 1): (98.3, 0.5), (5, 5): (99.2, 0.2),
                              (20, 1): (89.4, 0.5), (20, 5): (97.9, 0.1)}.items()}),
    "anil": _Method("anil"),
    "boil": _Method("boil"),
    "cavia": _Method("cavia"),
    "snail": _Method("snail"),
    "lstm_metalearner": _Method("lstm_meta"),
    "metasgd": _Method("metasgd"),
    "mamlpp": _Method("maml_plus_plus"),
    "reptile": _Method("reptile"),
    "imaml": _Method("imaml"),
    "protonet": _Method("protonet"),
    "matchingnet": _Method("matching"),
    "r2d2": _Method("r2d2"),
    "metaoptnet": _Method("metaoptnet", {"head": "svm"},
                          "kjunelee/MetaOptNet train.py --head SVM"),
    "metaoptnet_ridge": _Method("metaoptnet", {"head": "ridge"},
                                "kjunelee/MetaOptNet train.py --head Ridge"),
    "cnp": _Method("cnp"),
    "np": _Method("neural_process"),
    "anp": _Method("neural_process", table="SETTINGS_ANP"),
    "baseline": _Method("transfer"),
    "baseline_pp": _Method("transfer", table="SETTINGS_PP"),
    "rfs_simple": _Method("transfer", table="SETTINGS_RFS"),
    "simpleshot": _Method("transfer", table="SETTINGS_SIMPLESHOT"),
    "meta_baseline": _Method("transfer", table="SETTINGS_META_BASELINE"),
}


def methods() -> tuple[str, ...]:
  """The method names with paper settings (the registry's names), sorted."""
  return tuple(sorted(_METHODS))


@functools.cache
def _table(method: str) -> dict[str, PaperSetting]:
  if method not in _METHODS:
    raise ValueError(
        f"unknown method {method!r}; choose one of {', '.join(methods())}")
  spec = _METHODS[method]
  table = getattr(importlib.import_module(f"{__name__}.{spec.module}"),
                  spec.table)
  if not spec.learner:
    return dict(table)
  return {key: dataclasses.replace(
      s, learner={**s.learner, **spec.learner},
      source=f"{s.source}; {spec.source}",
      published=spec.published.get(key, ())) for key, s in table.items()}


def settings(method: str) -> tuple[str, ...]:
  """The setting keys of ``method``, in its table's order."""
  return tuple(_table(method))


def get(method: str, setting: str) -> PaperSetting:
  """The paper's values for ``method`` on ``setting`` (a copy: edit freely).

  Raises:
    ValueError: unknown ``method`` or ``setting``; the message lists the
      valid ones.
  """
  table = _table(method)
  if setting not in table:
    raise ValueError(
        f"unknown paper setting {setting!r} for {method}; choose one of "
        f"{', '.join(table)}")
  return copy.deepcopy(table[setting])


def _kwargs(d: Mapping[str, Any]) -> str:
  return ", ".join(f"{k}={v!r}" for k, v in d.items())


def _cell(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ")


def table() -> str:
  """Every method x setting as a markdown table (for the README)."""
  rows = ["| method | setting | learner kwargs | outer | source |",
          "|---|---|---|---|---|"]
  for method in methods():
    for key, s in _table(method).items():
      source = f"{s.source} (note: {s.note})" if s.note else s.source
      rows.append("| " + " | ".join(_cell(c) for c in (
          method, key, _kwargs(s.learner), _kwargs(s.outer), source)) + " |")
  return "\n".join(rows) + "\n"


__all__ = ["PaperSetting", "Published", "get", "methods", "settings",
           "table"]
