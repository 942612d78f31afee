"""R2-D2's paper settings.

References:
  Bertinetto, Henriques, Torr & Vedaldi, "Meta-learning with differentiable
  closed-form solvers", ICLR 2019, arXiv:1805.08136 (Sec. 4).
  Official code: https://github.com/bertinetto/r2d2
  (``scripts/train/experiments.sh``, ``scripts/train/conf/fewshots.yaml``,
  ``fewshots/data/SetupEpisode.py``).

Meta-training uses more ways than testing (16 mini-ImageNet, 20 CIFAR-FS, 60
Omniglot; the learner's ``ways`` bounds them) and a random number of shots
per episode: ``random.sample(range(shot_min, shot_max), 1)`` with 1 and 10,
so ``train_shots=(1, 10)`` is that half-open range, 1 to 9 shots. An episode
has ``episode_size`` images (``--data.batch_size``), the queries per class
being what the shots leave. Adam 5e-3 halved every 20 epochs of 100
episodes, early stopping with patience 200 epochs. Lambda starts at 50, the
output offset at 0 and the scale at 1e-4 (mini-ImageNet) or 10 (CIFAR-FS,
Omniglot). The paper's backbone (four blocks of 96-192-384-512 filters, the
last two blocks' features concatenated) is not reproduced: pass any
backbone. ``fewshots.yaml`` has ``base_learner.learn_lambda: False``,
where the learner's default meta-learns lambda; the notes say so.
"""
from __future__ import annotations

from metajax.configs import PaperSetting

_YAML = ("fewshots.yaml: train.learning_rate 5e-3, train.lr_decay 0.5, "
         "train.decay_every 20, data.train_episodes 100, train.patience 200, "
         "data.shot_min 1, data.shot_max 10, base_learner.init_lambda 50")
_NOTE = ("fewshots.yaml sets base_learner.learn_lambda False (lambda fixed); "
         "R2D2 meta-learns it by default")


def _entry(train_ways: int, scale: float, episode: int, command: str,
           note: str = "") -> PaperSetting:
  return PaperSetting(
      learner=dict(ways=train_ways, init_lambda=50.0, init_scale=scale,
                   init_bias=0.0, embedding="joint"),
      outer=dict(optimizer="adam", meta_lr=5e-3, lr_decay=0.5,
                 lr_decay_every=2000, train_ways=train_ways,
                 train_shots=(1, 10), episode_size=episode,
                 episodes_per_epoch=100, patience=200),
      source=(f"Bertinetto et al. 2019 Sec. 4; bertinetto/r2d2 "
              f"experiments.sh {command}; {_YAML}"),
      note="; ".join(filter(None, (note, _NOTE))))


def _mini() -> PaperSetting:
  return _entry(16, 1e-4, 240, "mini_r2d2: --data.way 16 "
                "--base_learner.init_adj_scale 1e-4 (data.batch_size 240)")


def _cifarfs() -> PaperSetting:
  return _entry(20, 10.0, 240, "cifar_r2d2: --data.dataset cifar100 "
                "--data.way 20 --base_learner.init_adj_scale 1e1 "
                "(data.batch_size 240)")


def _omniglot(ways: int) -> PaperSetting:
  return _entry(60, 10.0, 600, f"omni{ways}_r2d2: --data.way 60 "
                f"--data.test_way {ways} --augm.rotation True "
                "--base_learner.init_adj_scale 10 --data.batch_size 600",
                note=f"trains 60-way, tests {ways}-way")


SETTINGS: dict[str, PaperSetting] = {
    "omniglot_5way_1shot": _omniglot(5),
    "omniglot_5way_5shot": _omniglot(5),
    "omniglot_20way_1shot": _omniglot(20),
    "omniglot_20way_5shot": _omniglot(20),
    "miniimagenet_5way_1shot": _mini(),
    "miniimagenet_5way_5shot": _mini(),
    "cifarfs_5way_1shot": _cifarfs(),
    "cifarfs_5way_5shot": _cifarfs(),
}
