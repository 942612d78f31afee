"""CAVIA's paper settings.

References:
  Zintgraf, Shiarlis, Kurin, Hofmann & Whiteson, "Fast Context Adaptation
  via Meta-Learning", ICML 2019, arXiv:1810.03642.
  Official code: https://github.com/lmzintgraf/cavia
  (``regression/arguments.py`` defaults: 5 context parameters concatenated
  to the input, MLP 40-40, inner step 1.0, one inner step, Adam 1e-3, 25
  tasks of 10 points per meta-step, 50,000 meta-steps;
  ``classification/arguments.py`` defaults: inner step 1.0, 2 inner steps
  at training and test, 16 tasks, Adam 1e-3, 60,000 meta-steps, 100 context
  parameters fed to the third conv layer by FiLM).

The sinusoid entry is the paper's regression setting. CAVIA has no Omniglot
experiment, and metajax conditions on the context by concatenation to the
input only (no FiLM): the Omniglot entries take the image code's inner loop
and outer values with the regression code's 5 input-concatenated context
parameters (constant input channels), and say so.
"""
from __future__ import annotations

from metajax.configs import PaperSetting

_CODE = "lmzintgraf/cavia"

_SINUSOID = PaperSetting(
    learner=dict(num_context=5, inner_steps=1, inner_lr=1.0, loss="mse"),
    outer=dict(optimizer="adam", meta_lr=1e-3, meta_batch=25,
               meta_iters=50_000, train_shots=10, train_queries=10),
    source=(f"Zintgraf et al. 2019 Sec. 5.1; {_CODE} regression/arguments.py "
            "defaults (--num_context_params 5 --lr_inner 1.0 "
            "--num_inner_updates 1 --lr_meta 0.001 --tasks_per_metaupdate 25 "
            "--k_meta_train 10 --k_meta_test 10 --n_iter 50000 "
            "--num_hidden_layers 40 40)"))


def _omniglot(ways: int, shots: int) -> PaperSetting:
  return PaperSetting(
      learner=dict(num_context=5, inner_steps=2, inner_lr=1.0,
                   eval_inner_steps=2, loss="cross_entropy"),
      outer=dict(optimizer="adam", meta_lr=1e-3, meta_batch=16,
                 meta_iters=60_000),
      source=(f"{_CODE} classification/arguments.py defaults (--lr_inner 1.0 "
              "--num_grad_steps_inner 2 --num_grad_steps_eval 2 "
              "--tasks_per_metaupdate 16 --lr_meta 0.001 --n_iter 60000); "
              "context size: regression/arguments.py --num_context_params 5"),
      note=(f"no Omniglot cell in CAVIA's paper ({ways}-way {shots}-shot "
            "here): the image code's inner loop; the context (5 parameters) "
            "is concatenated to the input as constant channels, where the "
            "image code feeds 100 to the third conv layer by FiLM"))


SETTINGS: dict[str, PaperSetting] = {
    "sinusoid_10shot": _SINUSOID,
    **{f"omniglot_{w}way_{k}shot": _omniglot(w, k)
       for w in (5, 20) for k in (1, 5)},
}
