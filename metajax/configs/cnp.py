"""The Conditional Neural Process's paper setting.

References:
  Garnelo, Rosenbaum, Maddison, Ramalho, Saxton, Shanahan, Teh, Rezende &
  Eslami, "Conditional Neural Processes", ICML 2018, arXiv:1807.01613
  (Sec. 4.1, 1-D function regression).
  Official code: https://github.com/deepmind/neural-processes
  (``conditional_neural_process.ipynb``).

The paper describes the 1-D GP experiment without every number; the
authors' notebook fixes them, and :mod:`metajax.data.gp` draws its tasks:
at most 10 context points (a random count from 3), targets that include the
context, batches of 64 functions.
"""
from __future__ import annotations

from metajax.configs import PaperSetting

SETTINGS: dict[str, PaperSetting] = {
    "gp_1d": PaperSetting(
        learner=dict(encoder_sizes=(128, 128, 128, 128),
                     decoder_sizes=(128, 128), min_std=0.1),
        outer=dict(optimizer="adam", meta_lr=1e-4, meta_batch=64,
                   meta_iters=200_000, max_context=10),
        source=("Garnelo et al. 2018 Sec. 4.1; deepmind/neural-processes "
                "conditional_neural_process.ipynb: encoder_output_sizes = "
                "[128, 128, 128, 128], decoder_output_sizes = [128, 128, 2], "
                "sigma = 0.1 + 0.9 * softplus, TRAINING_ITERATIONS = "
                "int(2e5), MAX_CONTEXT_POINTS = 10, GPCurvesReader("
                "batch_size=64), AdamOptimizer(1e-4)")),
}
