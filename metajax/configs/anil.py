"""ANIL's paper settings: MAML's.

References:
  Raghu, Raghu, Bengio & Vinyals, "Rapid Learning or Feature Reuse? Towards
  Understanding the Effectiveness of MAML", ICLR 2020, arXiv:1909.09157
  (Sec. 4, Table 2).
  Official code: none released with the paper.

ANIL changes only which parameters the inner loop adapts (the head; the
registry's ``anil`` sets ``adapt_mask``), and the paper trains it with MAML's
hyperparameters on MAML's benchmarks. So every entry here is
:mod:`metajax.configs.maml`'s entry for the same key. The paper's cells are
Omniglot 20-way 1- and 5-shot (96.2 +- 0.5, 98.0 +- 0.3) and mini-ImageNet
5-way 1- and 5-shot; the other keys (Omniglot 5-way, sinusoid) exist so
every method answers the same questions, and their notes say they are not
ANIL cells.
"""
from __future__ import annotations

import dataclasses

from metajax.configs import PaperSetting, Published
from metajax.configs import maml

#: Raghu et al. 2020 Table 2 (ANIL, Omniglot 20-way).
_PUBLISHED = {"omniglot_20way_1shot": (96.2, 0.5),
              "omniglot_20way_5shot": (98.0, 0.3)}

_PAPER_CELLS = ("omniglot_20way_1shot", "omniglot_20way_5shot",
                "miniimagenet_5way_1shot", "miniimagenet_5way_5shot")


def _entry(key: str, s: PaperSetting) -> PaperSetting:
  note = s.note if key in _PAPER_CELLS else "; ".join(filter(None, (
      "no such cell in ANIL's paper: MAML's values for it", s.note)))
  return dataclasses.replace(
      s, source=("Raghu et al. 2020 Sec. 4: ANIL is trained with MAML's "
                 f"hyperparameters; MAML's: {s.source}"),
      note=note,
      published=((Published(*_PUBLISHED[key], "Raghu et al. 2020 Table 2",
                            ("maml", "transductive")),)
                 if key in _PUBLISHED else ()))


SETTINGS: dict[str, PaperSetting] = {
    key: _entry(key, s) for key, s in maml.SETTINGS.items()}
