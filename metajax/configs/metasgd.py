"""Meta-SGD's paper settings.

References:
  Li, Zhou, Chen & Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot
  Learning", arXiv:1707.09835, 2017 (Sec. 4).
  Official code: none released by the authors.

Meta-SGD is MAML with one inner step whose rate ``alpha`` is a meta-learned
array per parameter (``learn_inner_lr='per_param'``), on MAML's networks and
benchmarks; the paper reports every Omniglot cell (99.53 / 99.93 / 95.93 /
98.97) and sinusoid regression with K = 5, 10, 20.

What is not the paper's: ``inner_lr`` is where the learned rates start. The
paper draws them uniformly from [0.005, 0.1] for regression; here they start
at MAML's step size for the setting, so Meta-SGD begins as MAML. The outer
loop (meta learning rate, meta-batch, iterations) is MAML's code's (cbfinn/
maml), because no Meta-SGD code fixes it; each entry's note says so.
"""
from __future__ import annotations

from metajax.configs import PaperSetting, Published
from metajax.configs import maml

#: Li et al. 2017 Table 1, Omniglot (95% intervals).
_PUBLISHED = {"omniglot_5way_1shot": (99.53, 0.26),
              "omniglot_5way_5shot": (99.93, 0.09),
              "omniglot_20way_1shot": (95.93, 0.38),
              "omniglot_20way_5shot": (98.97, 0.19)}

_NOTE = ("the learned per-parameter rates start at MAML's step size (the "
         "paper draws them from U[0.005, 0.1] for regression); outer values "
         "are MAML's code's, not verified against the Meta-SGD paper")


def _entry(key: str, inner_lr: float, loss: str = "cross_entropy",
           extra_note: str = "") -> PaperSetting:
  m = maml.SETTINGS[key]
  return PaperSetting(
      learner=dict(loss=loss, inner_steps=1, inner_lr=inner_lr,
                   eval_inner_steps=1, learn_inner_lr="per_param"),
      outer=dict(m.outer),
      source=("Li et al. 2017 Sec. 4 (one adaptation step with learned "
              "per-parameter rates, at training and test); outer loop: "
              + m.source),
      note=_NOTE + extra_note,
      protocol=dict(m.protocol),
      published=((Published(*_PUBLISHED[key], "Li et al. 2017 Table 1",
                            ("maml", "transductive")),)
                 if key in _PUBLISHED else ()))


_SUMMED = ("; the rates start at MAML's step on metajax's mean "
           "cross-entropy (N x cbfinn/maml's on its summed loss)")

SETTINGS: dict[str, PaperSetting] = {
    "sinusoid_5shot": _entry("sinusoid_5shot", 0.01, loss="mse"),
    "sinusoid_10shot": _entry("sinusoid_10shot", 0.01, loss="mse"),
    "omniglot_5way_1shot": _entry("omniglot_5way_1shot", 2.0,
                                  extra_note=_SUMMED),
    "omniglot_5way_5shot": _entry("omniglot_5way_5shot", 2.0,
                                  extra_note=_SUMMED),
    "omniglot_20way_1shot": _entry("omniglot_20way_1shot", 2.0,
                                   extra_note=_SUMMED),
    "omniglot_20way_5shot": _entry("omniglot_20way_5shot", 2.0,
                                   extra_note=_SUMMED),
    "miniimagenet_5way_1shot": _entry("miniimagenet_5way_1shot", 0.05,
                                      extra_note=_SUMMED),
    "miniimagenet_5way_5shot": _entry("miniimagenet_5way_5shot", 0.05,
                                      extra_note=_SUMMED),
}
