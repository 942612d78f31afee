"""SNAIL's paper settings.

References:
  Mishra, Rohaninejad, Chen & Abbeel, "A Simple Neural Attentive
  Meta-Learner", ICLR 2018, arXiv:1707.03141 (Appendix B: the Omniglot and
  mini-ImageNet architectures, Adam with an initial rate of 1e-3 (Omniglot),
  batches of 32 (Omniglot) or 8 (mini-ImageNet) episodes). No official code
  was released.

The sequence model is :data:`metajax.algorithms.snail.PAPER_BLOCKS`. The
paper's Omniglot embedding is a stack of four blocks of 3x3 conv with 64
filters, batch norm, ReLU and 2x2 max-pooling (conv-4). Published Omniglot
5-way accuracies (99.07 +- 0.16, 99.78 +- 0.09) and 20-way (97.64 +- 0.30,
99.36 +- 0.18) are from its Table 1; they are not recorded as comparable
cells here since the paper's training details (number of iterations) are
not given.
"""
from __future__ import annotations

from metajax.configs import PaperSetting

_SOURCE = ("Mishra et al. 2018 Appendix B (Omniglot: Att(64,32), TC(T,128), "
           "Att(256,128), TC(T,128), Att(512,256); Adam 1e-3, 32 episodes "
           "per batch)")

SETTINGS: dict[str, PaperSetting] = {
    f"omniglot_{w}way_{k}shot": PaperSetting(
        learner=dict(ways=w, embedding="joint"),
        outer=dict(optimizer="adam", meta_lr=1e-3, meta_batch=32, filters=64),
        source=_SOURCE)
    for w in (5, 20) for k in (1, 5)}
