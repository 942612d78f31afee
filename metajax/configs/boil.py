"""BOIL's paper settings.

References:
  Oh, Yoo, Kim & Yun, "BOIL: Towards Representation Change for Few-shot
  Learning", ICLR 2021, arXiv:2008.08882.
  Official code: https://github.com/jhoon-oh/BOIL (``main.py`` defaults,
  ``run_4conv.sh``: ``--model 4conv --hidden-size 64 --num-ways 5
  --inner-update-num 1 --extractor-step-size 0.5 --meta-lr 1e-3``, meta-batch
  4, ``--batch-iter 300`` x ``--train-batches 100`` meta-steps; BOIL is the
  run with ``--classifier-step-size 0``).

BOIL is MAML whose inner loop updates the body (the feature extractor) and
freezes the head; the registry's ``boil`` sets that ``adapt_mask``. The
inner step 0.5 is on torchmeta's mean cross-entropy, as metajax's loss. The
paper's benchmarks are mini-ImageNet, tieredImageNet, CUB, Cars and
CIFAR-FS/FC100 (no Omniglot): the Omniglot entries use its mini-ImageNet
4conv values and say so. No published number is recorded here.
"""
from __future__ import annotations

from metajax.configs import PaperSetting

_CODE = "jhoon-oh/BOIL"


def _setting(shots: int, note: str = "") -> PaperSetting:
  return PaperSetting(
      learner=dict(inner_steps=1, inner_lr=0.5, loss="cross_entropy"),
      outer=dict(optimizer="adam", meta_lr=1e-3, meta_batch=4,
                 meta_iters=300 * 100, filters=64, max_pool=True),
      source=(f"Oh et al. 2021 Sec. 4; {_CODE} run_4conv.sh --num-shots "
              f"{shots} --inner-update-num 1 --extractor-step-size 0.5 "
              "--classifier-step-size 0 --meta-lr 1e-3 --batch-size 4 "
              "--batch-iter 300 --train-batches 100 --hidden-size 64"),
      note=note)


_STAND_IN = ("BOIL has no Omniglot experiment: its mini-ImageNet 4conv "
             "values stand in")

SETTINGS: dict[str, PaperSetting] = {
    **{f"omniglot_{w}way_{k}shot": _setting(k, _STAND_IN)
       for w in (5, 20) for k in (1, 5)},
    "miniimagenet_5way_1shot": _setting(1),
    "miniimagenet_5way_5shot": _setting(5),
}
