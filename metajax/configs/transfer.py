"""The transfer baselines' settings: Baseline, Baseline++, RFS-simple,
SimpleShot, Meta-Baseline.

References:
  Chen, Liu, Kira, Wang & Huang, "A Closer Look at Few-shot
  Classification", ICLR 2019. Official code:
  https://github.com/wyharveychen/CloserLookFewShot (``train.py``: Adam
  with PyTorch's defaults, ``SimpleDataManager(batch_size=16)``,
  ``stop_epoch`` 5 on Omniglot and 400 on mini-ImageNet for the baselines;
  ``--num_classes`` at least 4112 on Omniglot; ``backbone.py: distLinear``;
  ``methods/baselinefinetune.py``: the test-time head; ``test.py``: 600
  episodes of 15 queries per class on features saved in ``eval()`` mode).
  Tian et al., "Rethinking Few-Shot Image Classification: a Good Embedding
  Is All You Need?", ECCV 2020. Code: https://github.com/WangYueFt/rfs
  (``train_supervised.py`` defaults; ``eval/meta_eval.py``:
  ``LogisticRegression(penalty='l2', C=1.0, solver='lbfgs',
  multi_class='multinomial')`` on L2-normalised features).
  Wang et al., "SimpleShot", arXiv:1911.04623. Code:
  https://github.com/mileyan/simple_shot (``src/train.py``:
  ``metric_class_type(norm_type='CL2N')``).
  Chen et al., "Meta-Baseline", ICCV 2021. Code:
  https://github.com/yinboc/few-shot-meta-baseline
  (``configs/train_classifier_mini.yaml``, ``configs/train_meta_mini.yaml``,
  ``models/meta_baseline.py``: temperature 10, learnable).

Omniglot. Chen et al.'s code runs Omniglot on the Vinyals split with each
rotation a class (``filelists/omniglot``: 1028 characters x 4 = 4112 base
classes), a 1-channel conv-4 with 64 filters and max-pooling (``Conv4S``),
batch norm in train mode while pretraining and ``eval()`` mode for the saved
features, minibatches of 16 for 5 epochs (5 x 82,240 / 16 = 25,700 steps).
The other three papers have no Omniglot experiment: their Omniglot entries
use that same pretraining, with their own heads, and say so. No published
Omniglot number is recorded for any of them.
"""
from __future__ import annotations

from metajax.configs import PaperSetting

_CHEN = "wyharveychen/CloserLookFewShot"
#: the SGD loop of BaselineFinetune.set_forward_adaptation.
_HEAD_SGD = dict(head_epochs=100, head_batch=4, head_lr=0.01,
                 head_momentum=0.9, head_dampening=0.9,
                 head_weight_decay=1e-3)
#: Vinyals' 1028 training characters, each rotation a class.
OMNIGLOT_BASE_CLASSES = 4112
#: images per pretraining epoch on Omniglot: 4112 classes x 20 drawings.
_OMNIGLOT_EPOCH = OMNIGLOT_BASE_CLASSES * 20


#: Chen et al.'s Omniglot pretraining budget: 5 epochs of minibatches of 16.
_OMNIGLOT_PRETRAIN_STEPS = 5 * _OMNIGLOT_EPOCH // 16


def _omniglot_protocol() -> dict:
  return dict(filters=64, downsample="maxpool", norm="running",
              features="flatten", rotation="classes", split="vinyals",
              queries=15, eval_tasks=600, pretrain_batch=16,
              iterations=_OMNIGLOT_PRETRAIN_STEPS)


def _chen_omniglot(ways: int, shots: int, classifier: str) -> PaperSetting:
  head = "linear" if classifier == "linear" else "cosine"
  flag = "baseline" if classifier == "linear" else "baseline++"
  return PaperSetting(
      learner=dict(classifier=classifier, head=head,
                   base_classes=OMNIGLOT_BASE_CLASSES, **_HEAD_SGD),
      outer=dict(optimizer="adam", meta_lr=1e-3, pretrain_batch=16,
                 epochs=5, batches_per_epoch=_OMNIGLOT_EPOCH // 16,
                 filters=64, eval_queries=15, eval_tasks=600),
      source=(f"Chen et al. 2019; {_CHEN} train.py --dataset omniglot "
              f"--model Conv4 --method {flag} --num_classes 4112 (Adam "
              "defaults, batch 16, stop_epoch 5); test.py --n_shot "
              f"{shots} --test_n_way {ways} (600 episodes, 15 queries); "
              "baselinefinetune.py: SGD 0.01, momentum 0.9, dampening 0.9, "
              "weight decay 0.001, 100 epochs of minibatches of 4"),
      note=("base classes: the Vinyals training characters with rotations "
            "as classes; no published Omniglot number recorded"),
      protocol=_omniglot_protocol())


def _chen_miniimagenet(shots: int, classifier: str) -> PaperSetting:
  head = "linear" if classifier == "linear" else "cosine"
  flag = "baseline" if classifier == "linear" else "baseline++"
  return PaperSetting(
      learner=dict(classifier=classifier, head=head, base_classes=64,
                   **_HEAD_SGD),
      outer=dict(optimizer="adam", meta_lr=1e-3, pretrain_batch=16,
                 epochs=400, filters=64, eval_queries=15, eval_tasks=600),
      source=(f"Chen et al. 2019 Table A5 protocol; {_CHEN} train.py "
              f"--dataset miniImagenet --model Conv4 --method {flag} "
              f"--train_aug (stop_epoch 400, batch 16); test.py --n_shot "
              f"{shots}"))


def _stand_in(base: PaperSetting, head: str, source: str, note: str,
              **learner) -> PaperSetting:
  return PaperSetting(
      learner={**base.learner, "classifier": "linear", "head": head,
               **learner},
      outer=dict(base.outer), source=f"{source}; pretraining: {base.source}",
      note=note, protocol=dict(base.protocol))


_OMNIGLOT_CELLS = ((5, 1), (5, 5), (20, 1), (20, 5))

#: Baseline (Chen et al. 2019): linear pretraining classifier, linear head.
SETTINGS: dict[str, PaperSetting] = {
    **{f"omniglot_{w}way_{k}shot": _chen_omniglot(w, k, "linear")
       for w, k in _OMNIGLOT_CELLS},
    "miniimagenet_5way_1shot": _chen_miniimagenet(1, "linear"),
    "miniimagenet_5way_5shot": _chen_miniimagenet(5, "linear"),
}

#: Baseline++ (Chen et al. 2019): cosine (distLinear) classifier and head.
SETTINGS_PP: dict[str, PaperSetting] = {
    **{f"omniglot_{w}way_{k}shot": _chen_omniglot(w, k, "cosine")
       for w, k in _OMNIGLOT_CELLS},
    "miniimagenet_5way_1shot": _chen_miniimagenet(1, "cosine"),
    "miniimagenet_5way_5shot": _chen_miniimagenet(5, "cosine"),
}

_RFS = ("Tian et al. 2020; WangYueFt/rfs eval/meta_eval.py: "
        "LogisticRegression(penalty='l2', C=1.0, multinomial) on "
        "L2-normalised features")
_RFS_MINI_OUTER = dict(optimizer="sgd", meta_lr=0.05, momentum=0.9,
                       weight_decay=5e-4, pretrain_batch=64, epochs=100,
                       lr_decay_epochs=(60, 80), lr_decay=0.1,
                       eval_queries=15, eval_tasks=600)

#: RFS-simple (Tian et al. 2020): linear pretraining, logistic regression.
SETTINGS_RFS: dict[str, PaperSetting] = {
    **{key: _stand_in(s, "logistic", _RFS,
                      "RFS has no Omniglot experiment: Chen et al.'s Omniglot "
                      "pretraining stands in, with RFS's head",
                      logistic_c=1.0)
       for key, s in SETTINGS.items() if key.startswith("omniglot_")},
    **{f"miniimagenet_5way_{k}shot": PaperSetting(
        learner=dict(classifier="linear", head="logistic", base_classes=64,
                     logistic_c=1.0),
        outer=dict(_RFS_MINI_OUTER),
        source=(f"{_RFS}; train_supervised.py defaults (SGD 0.05, momentum "
                "0.9, weight decay 5e-4, batch 64, 100 epochs, x0.1 at "
                "epochs 60 and 80)"),
        note="the paper's backbone is ResNet-12; conv-4 here")
       for k in (1, 5)},
}

_SIMPLESHOT = ("Wang et al. 2019; mileyan/simple_shot src/train.py "
               "metric_class_type(norm_type='CL2N'): features minus the "
               "base classes' mean feature, L2-normalised, nearest centroid")

#: SimpleShot (Wang et al. 2019): linear pretraining, CL2N nearest centroid.
SETTINGS_SIMPLESHOT: dict[str, PaperSetting] = {
    key: _stand_in(s, "simpleshot", _SIMPLESHOT,
                   "SimpleShot has no Omniglot experiment: Chen et al.'s "
                   "Omniglot pretraining stands in, with SimpleShot's head"
                   if key.startswith("omniglot_") else
                   "pretraining as Chen et al.'s conv-4 (SimpleShot's own "
                   "conv-4 recipe is not recorded here)")
    for key, s in SETTINGS.items()
}

_META_BASELINE = ("Chen et al. 2021; yinboc/few-shot-meta-baseline "
                  "models/meta_baseline.py (method 'cos', temperature 10, "
                  "learnable)")

#: Meta-Baseline (Chen et al. 2021): linear pretraining, then episodic
#: meta-training of the cosine nearest-centroid classifier.
SETTINGS_META_BASELINE: dict[str, PaperSetting] = {
    **{f"omniglot_{w}way_{k}shot": PaperSetting(
        learner=dict(temperature=10.0, learn_temperature=True,
                     embedding="joint"),
        outer=dict(pretrain_optimizer="adam", pretrain_lr=1e-3,
                   pretrain_batch=16, pretrain_epochs=5,
                   pretrain_batches_per_epoch=_OMNIGLOT_EPOCH // 16,
                   eval_queries=15, eval_tasks=600),
        source=(f"{_META_BASELINE}; pretraining: "
                f"{SETTINGS[f'omniglot_{w}way_{k}shot'].source}"),
        note=("Meta-Baseline has no Omniglot experiment: Chen et al. "
              "2019's Omniglot pretraining, then the meta stage with the "
              "experiment's optimiser (no meta-stage budget to follow)"),
        protocol={**{k2: v for k2, v in _omniglot_protocol().items()
                     if k2 != "iterations"},
                  "pretrain_iterations": _OMNIGLOT_PRETRAIN_STEPS})
       for w, k in _OMNIGLOT_CELLS},
    **{f"miniimagenet_5way_{k}shot": PaperSetting(
        learner=dict(temperature=10.0, learn_temperature=True,
                     embedding="joint"),
        outer=dict(optimizer="sgd", meta_lr=0.001, weight_decay=5e-4,
                   meta_batch=4, episodes_per_epoch=200, epochs=20,
                   pretrain_optimizer="sgd", pretrain_lr=0.1,
                   pretrain_batch=128, pretrain_epochs=100,
                   pretrain_lr_decay_epochs=(90,), eval_queries=15),
        source=(f"{_META_BASELINE}; configs/train_classifier_mini.yaml "
                "(SGD 0.1, weight decay 5e-4, batch 128, 100 epochs, "
                "milestone 90) and configs/train_meta_mini.yaml (SGD 0.001, "
                "200 batches of 4 episodes per epoch, 20 epochs)"),
        note="the paper's backbone is ResNet-12; conv-4 here")
       for k in (1, 5)},
}
