"""Reptile's paper settings.

References:
  Nichol, Achiam & Schulman, "On First-Order Meta-Learning Algorithms",
  arXiv:1803.02999, 2018 (App. A, Tables 3-4).
  Official code: https://github.com/openai/supervised-reptile (the commands
  "used for the paper" in ``README.md``; flags in
  ``supervised_reptile/args.py``).

Flags to fields: ``--inner-iters`` is ``inner_steps``, ``--learning-rate``
the inner Adam's ``inner_lr``, ``--inner-batch`` ``inner_batch_size``,
``--eval-iters``/``--eval-batch`` ``eval_inner_steps``/
``eval_inner_batch_size``; ``--meta-step``/``--meta-step-final``/
``--meta-iters`` are ``Reptile.outer_optimizer``'s annealed step, and
``--meta-batch`` the tasks per meta-step.

``train_shots`` matters: training tasks have 10 (Omniglot) or 15
(mini-ImageNet) examples per class whatever the test shots, and each inner
step draws its own batch of ``inner_batch_size`` from them. With 1-shot
training tasks every step sees the same images and Reptile's useful term
(the gradient inner product between minibatches) vanishes. Evaluation:
``--eval-samples`` 10,000 tasks of one query per class (``evaluate`` samples
``num_shots + 1`` per class). The README's
headline numbers use ``--transductive`` (batch norm over all queries at
once); the non-transductive commands are otherwise identical.

Non-transductive evaluation in the code predicts each query from a batch of
the support set plus that one query (``_test_predictions``), so batch norm
sees the support set and one query; metajax's
``eval_query_context='support'`` does the same (the experiment's
``paper_reptile_<N>w<K>s_nontransductive`` configs, policy label
``'non_transductive'``).

Protocol (``protocol``): ``models.py`` ``OmniglotModel`` (64 filters, stride
2, batch norm with a scale, 256 flattened features); ``omniglot.py``
``split_dataset`` (a random 1200 / 423 split; metajax's seeded ``'maml'``
split stands in) and ``augment_dataset`` (training characters at four
rotations as new classes; test characters unrotated). The inner Adam's
slots are created once and never reset (``reptile.py`` restores only the
trainable variables between tasks, and evaluation restores the full trained
state after each test task), hence ``persistent_inner_state=True`` (see
:mod:`metajax.algorithms.reptile`).
"""
from __future__ import annotations

from metajax.configs import PaperSetting, Published

_README = "openai/supervised-reptile README"
#: Nichol et al. 2018 Table 1 (Omniglot): (transductive, not transductive),
#: each (accuracy, 95% interval).
_PUBLISHED = {(5, 1): ((97.68, 0.04), (95.39, 0.09)),
              (5, 5): ((99.48, 0.06), (98.90, 0.10)),
              (20, 1): ((89.43, 0.14), (88.14, 0.15)),
              (20, 5): ((97.12, 0.32), (96.65, 0.33))}


def _omniglot(ways: int, shots: int) -> PaperSetting:
  five = ways == 5
  flags = ("--inner-batch 10 --inner-iters 5 --learning-rate 0.001 "
           "--meta-batch 5 --meta-iters 100000 --eval-batch 5" if five else
           "--classes 20 --inner-batch 20 --inner-iters 10 "
           "--learning-rate 0.0005 --meta-batch 5 --meta-iters 200000 "
           "--eval-batch 10")
  return PaperSetting(
      learner=dict(loss="cross_entropy", inner_steps=5 if five else 10,
                   inner_lr=1e-3 if five else 5e-4,
                   inner_batch_size=10 if five else 20, eval_inner_steps=50,
                   eval_inner_batch_size=5 if five else 10,
                   persistent_inner_state=True),
      outer=dict(train_shots=10, meta_batch=5, meta_step=1.0,
                 meta_step_final=0.0,
                 meta_iters=100_000 if five else 200_000, eval_queries=1,
                 eval_tasks=10_000, filters=64, max_pool=False),
      source=(f"Nichol et al. 2018 App. A Table 3; {_README} run_omniglot.py "
              f"{'--shots 1 ' if shots == 1 else ''}--train-shots 10 {flags} "
              "--meta-step 1 --meta-step-final 0 --eval-iters 50; "
              "args.py --eval-samples 10000; models.py OmniglotModel: 64 "
              "filters, stride 2"),
      protocol=dict(filters=64, downsample="stride", norm="transductive",
                    features="flatten", rotation="classes",
                    eval_rotation="none", split="maml", queries=1,
                    eval_tasks=10_000,
                    anneal_iterations=100_000 if five else 200_000),
      published=(
          Published(*_PUBLISHED[(ways, shots)][0],
                    "Nichol et al. 2018 Table 1 (transductive)",
                    ("transductive",)),
          Published(*_PUBLISHED[(ways, shots)][1],
                    "Nichol et al. 2018 Table 1 (not transductive)",
                    ("non_transductive",),
                    note="each query scored in a batch with the support "
                         "set")))


def _miniimagenet(shots: int) -> PaperSetting:
  eval_batch = 5 if shots == 1 else 15
  return PaperSetting(
      learner=dict(loss="cross_entropy", inner_steps=8, inner_lr=1e-3,
                   inner_batch_size=10, eval_inner_steps=50,
                   eval_inner_batch_size=eval_batch,
                   persistent_inner_state=True),
      outer=dict(train_shots=15, meta_batch=5, meta_step=1.0,
                 meta_step_final=0.0, meta_iters=100_000, eval_queries=1,
                 eval_tasks=10_000, filters=32, max_pool=True),
      source=(f"Nichol et al. 2018 App. A Table 4; {_README} "
              f"run_miniimagenet.py {'--shots 1 ' if shots == 1 else ''}"
              "--train-shots 15 --inner-batch 10 --inner-iters 8 "
              "--learning-rate 0.001 --meta-step 1 --meta-step-final 0 "
              f"--meta-batch 5 --meta-iters 100000 --eval-batch {eval_batch} "
              "--eval-iters 50; models.py MiniImageNetModel: 32 filters, "
              "max-pool"))


SETTINGS: dict[str, PaperSetting] = {
    "omniglot_5way_1shot": _omniglot(5, 1),
    "omniglot_5way_5shot": _omniglot(5, 5),
    "omniglot_20way_1shot": _omniglot(20, 1),
    "omniglot_20way_5shot": _omniglot(20, 5),
    "miniimagenet_5way_1shot": _miniimagenet(1),
    "miniimagenet_5way_5shot": _miniimagenet(5),
}
