"""The LSTM meta-learner's paper settings.

References:
  Ravi & Larochelle, "Optimization as a Model for Few-Shot Learning", ICLR
  2017 (Sec. 4). Official code: https://github.com/twitter/meta-learning-lstm
  (``config/lstm/train-imagenet-1shot.lua``: Adam 1e-3, gradient norm
  clipped at 0.25, batch size 5, 12 epochs over the support set for 1-shot
  and 5 for 5-shot, 75,000 episodes; ``config/1-shot-5-class.lua``: 15
  evaluation examples per class; ``meta-learner-lstm.lua``: hidden size 20,
  forget bias in [4, 5], input bias in [-5, -4]).

Updates per task: 1-shot, 12 passes over 5 support images in one batch of 5
(12 updates); 5-shot, 5 passes over 25 in batches of 5 (25 updates). The
paper's benchmark is mini-ImageNet; the Omniglot entries use its values and
say so. The code clips the meta-gradient's norm at 0.25; the Omniglot
experiment's optimiser is plain Adam.
"""
from __future__ import annotations

from metajax.configs import PaperSetting

_CODE = "twitter/meta-learning-lstm"


def _setting(shots: int, note: str = "") -> PaperSetting:
  steps = 12 if shots == 1 else 5 * shots
  return PaperSetting(
      learner=dict(inner_steps=steps, inner_batch=5, hidden=20,
                   first_order=True, loss="cross_entropy"),
      outer=dict(optimizer="adam", meta_lr=1e-3, clip=0.25, meta_batch=1,
                 meta_iters=75_000, eval_queries=15),
      source=(f"Ravi & Larochelle 2017 Sec. 4; {_CODE} config/lstm/"
              f"train-imagenet-{shots}shot.lua (nEpochs {12 if shots == 1 else 5}"
              ", batchSize 5, Adam 0.001, maxGradNorm 0.25, nEpisode 75000)"),
      note=note)


_STAND_IN = ("no Omniglot cell in the paper: its mini-ImageNet values stand "
             "in")

SETTINGS: dict[str, PaperSetting] = {
    **{f"omniglot_{w}way_{k}shot": _setting(k, _STAND_IN)
       for w in (5, 20) for k in (1, 5)},
    "miniimagenet_5way_1shot": _setting(1),
    "miniimagenet_5way_5shot": _setting(5),
}
