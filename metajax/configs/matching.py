"""Matching Networks' paper settings.

References:
  Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, "Matching Networks
  for One Shot Learning", NeurIPS 2016, arXiv:1606.04080 (Sec. 4.1, App. A).
  Official code: none released by the authors.

The paper fixes the embedding (Conv-4, 64 filters), the cosine attention,
full context embeddings on mini-ImageNet but not on Omniglot, and training
episodes that match the test episodes (N-way K-shot). It states neither the
optimiser nor its learning rate, the number of training episodes, nor the
attention-LSTM's step count (``fce_steps`` keeps the learner's default):
an experiment supplies them, and ``outer`` holds only what the paper says.
"""
from __future__ import annotations

from metajax.configs import PaperSetting

_NOTE = ("the paper states no optimiser, learning rate or training length; "
         "the experiment's own outer loop applies")


def _entry(dataset: str, fce: bool) -> PaperSetting:
  return PaperSetting(
      learner=dict(fce=fce, temperature=1.0, embedding="joint"),
      outer=dict(filters=64, train_ways_equal_test=True),
      source=(f"Vinyals et al. 2016 Sec. 4.1.{2 if fce else 1} "
              f"({dataset}: Conv-4 with 64 filters, cosine distance, "
              f"{'full context embeddings' if fce else 'no FCE'}, training "
              "episodes of the test's N-way K-shot form)"),
      note=_NOTE)


SETTINGS: dict[str, PaperSetting] = {
    "omniglot_5way_1shot": _entry("Omniglot", False),
    "omniglot_5way_5shot": _entry("Omniglot", False),
    "omniglot_20way_1shot": _entry("Omniglot", False),
    "omniglot_20way_5shot": _entry("Omniglot", False),
    "miniimagenet_5way_1shot": _entry("miniImageNet", True),
    "miniimagenet_5way_5shot": _entry("miniImageNet", True),
}
