"""MetaOptNet's paper settings (SVM and ridge heads).

References:
  Lee, Maji, Ravichandran & Soatto, "Meta-Learning with Differentiable
  Convex Optimization", CVPR 2019, arXiv:1904.03758 (Sec. 4).
  Official code: https://github.com/kjunelee/MetaOptNet (``train.py``,
  ``models/classification_heads.py``, the commands in ``README.md``).

One table serves both registered methods: ``metaoptnet`` adds
``head='svm'`` (``--head SVM``), ``metaoptnet_ridge`` ``head='ridge'``
(``--head Ridge``). Head values: SVM cost ``C_reg=0.1``
(``MetaOptNetHead_SVM_CS``), ridge ``lambda_reg=50.0``
(``MetaOptNetHead_Ridge``), a learned logit scale starting at 1
(``ClassificationHead.scale``), support and query embedded in separate calls
(``embedding='separate'``). The reference solver runs qpth for 15 iterations
(``maxIter=15``); metajax's solver is a different algorithm, so
``qp_iters`` keeps the learner's default. The paper's ResNet-12 is not
reproduced: pass any backbone.

Outer loop (``train.py``): SGD with Nesterov momentum 0.9 and weight decay
5e-4, learning rate 0.1 times 1 / 0.06 / 0.012 / 0.0024 from epochs 0 / 20 /
40 / 50, 60 epochs of 1000 batches of 8 episodes, 5-way training episodes
with 6 queries per class and a high shot count that serves every test shot
(``--train-shot``: 15 mini-ImageNet and FC100, 10 tieredImageNet, 5
CIFAR-FS). Label smoothing is the command's ``--eps``: 0.1 in the
mini-ImageNet command, absent (0) in the others. Test: 1000 episodes of 15
queries per class (``test.py --episode 1000 --query 15``).

MetaOptNet has no Omniglot experiment. Its Omniglot entries take the
mini-ImageNet head and outer values with two changes, each in the note: the
head's ``ways`` is the test way count (the dual has one column per class),
and the training episodes are the test's N-way K-shot, since 15 shots + 6
queries exceed Omniglot's 20 drawings per character.
"""
from __future__ import annotations

from metajax.configs import PaperSetting

_TRAIN_PY = ("kjunelee/MetaOptNet train.py: SGD(lr=0.1, momentum=0.9, "
             "weight_decay=5e-4, nesterov=True), lambda_epoch 1 / 0.06 / "
             "0.012 / 0.0024 at epochs 20 / 40 / 50, --num-epoch 60, "
             "epoch_size episodes_per_batch * 1000, --episodes-per-batch 8, "
             "--train-way 5, --train-query 6; classification_heads.py "
             "C_reg=0.1, lambda_reg=50.0, scale 1.0; test.py --episode 1000 "
             "--query 15")


def _outer(train_ways: int, train_shots: int) -> dict:
  return dict(optimizer="sgd_nesterov", momentum=0.9, weight_decay=5e-4,
              meta_lr=0.1, lr_factors={20: 0.06, 40: 0.012, 50: 0.0024},
              batches_per_epoch=1000, epochs=60, meta_batch=8,
              train_ways=train_ways, train_shots=train_shots,
              train_queries=6, eval_queries=15, eval_tasks=1000)


def _entry(dataset: str, train_shots: int, smoothing: float,
           command: str, note: str = "") -> PaperSetting:
  return PaperSetting(
      learner=dict(ways=5, C=0.1, ridge_lambda=50.0, init_scale=1.0,
                   label_smoothing=smoothing, embedding="separate"),
      outer=_outer(5, train_shots),
      source=(f"Lee et al. 2019 Sec. 4 ({dataset}); README {command}; "
              f"{_TRAIN_PY}"),
      note=note)


def _omniglot(ways: int, shots: int) -> PaperSetting:
  mini = _entry("miniImageNet", 15, 0.1, _MINI)
  return PaperSetting(
      learner={**mini.learner, "ways": ways},
      outer=_outer(ways, shots),
      source=("no Omniglot experiment in Lee et al. 2019: the miniImageNet "
              f"values of {_TRAIN_PY}; README miniImageNet command --eps 0.1"),
      note=(f"no Omniglot cell in the paper: mini-ImageNet head values "
            f"(C 0.1, ridge lambda 50, label smoothing 0.1, separate "
            f"embedding) and outer loop, with ways={ways} (the test ways) "
            f"and {ways}-way {shots}-shot training episodes instead of "
            "5-way 15-shot (15 + 6 queries exceed Omniglot's 20 drawings "
            "per character)"))


_MINI = "--train-shot 15 --head SVM --dataset miniImageNet --eps 0.1"
_TIERED = "--train-shot 10 --head SVM --dataset tieredImageNet"
_CIFARFS = "--train-shot 5 --head Ridge --dataset CIFAR_FS"
_FC100 = "--train-shot 15 --head Ridge --dataset FC100"
_RIDGE_ONLY = ("the README's command trains the ridge head; the SVM head "
               "changes only --head")

SETTINGS: dict[str, PaperSetting] = {
    "omniglot_5way_1shot": _omniglot(5, 1),
    "omniglot_5way_5shot": _omniglot(5, 5),
    "omniglot_20way_1shot": _omniglot(20, 1),
    "omniglot_20way_5shot": _omniglot(20, 5),
    "miniimagenet_5way_1shot": _entry("miniImageNet", 15, 0.1, _MINI),
    "miniimagenet_5way_5shot": _entry("miniImageNet", 15, 0.1, _MINI),
    "tieredimagenet_5way_1shot": _entry("tieredImageNet", 10, 0.0, _TIERED),
    "tieredimagenet_5way_5shot": _entry("tieredImageNet", 10, 0.0, _TIERED),
    "cifarfs_5way_1shot": _entry("CIFAR-FS", 5, 0.0, _CIFARFS, _RIDGE_ONLY),
    "cifarfs_5way_5shot": _entry("CIFAR-FS", 5, 0.0, _CIFARFS, _RIDGE_ONLY),
    "fc100_5way_1shot": _entry("FC100", 15, 0.0, _FC100, _RIDGE_ONLY),
    "fc100_5way_5shot": _entry("FC100", 15, 0.0, _FC100, _RIDGE_ONLY),
}
