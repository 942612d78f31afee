"""Meta-test evaluation: the many-task harness, its statistics, Lake's benchmark.

* :mod:`~metajax.evaluation.harness`: :func:`evaluate` (600 test tasks, 95%
  interval, per-inner-step curve, JSON) and :func:`compare` (paired
  differences);
* :mod:`~metajax.evaluation.stats`: :func:`mean_ci95`;
* :mod:`~metajax.evaluation.lake`: Lake et al.'s 20-way one-shot benchmark;
* :mod:`~metajax.evaluation.meta_gradients`: exact, first-order, implicit
  and Reptile meta-gradients side by side (:func:`compare_meta_gradients`,
  :func:`track` over a training run);
* :mod:`~metajax.evaluation.plots`: :func:`plot_predictions` (a regression
  task's predictive mean and band as a PNG).
"""
from metajax.evaluation import harness, lake, meta_gradients, plots, stats
from metajax.evaluation.harness import (DEFAULT_NUM_TASKS, EvalResult, compare,
                                        evaluate, make_evaluator)
from metajax.evaluation.lake import (LAKE_RUNS, LAKE_WAYS, LakeResult, LakeRun,
                                     lake_one_shot, learner_matcher,
                                     load_lake_runs,
                                     modified_hausdorff_matcher)
from metajax.evaluation.meta_gradients import (Comparison,
                                               compare_meta_gradients)
from metajax.evaluation.plots import plot_predictions
from metajax.evaluation.stats import mean_ci95

__all__ = [
    "Comparison", "DEFAULT_NUM_TASKS", "EvalResult", "LAKE_RUNS", "LAKE_WAYS", "LakeResult",
    "LakeRun", "compare", "evaluate", "harness", "lake", "lake_one_shot",
    "learner_matcher", "load_lake_runs", "make_evaluator", "mean_ci95", "meta_gradients",
    "compare_meta_gradients",
    "modified_hausdorff_matcher", "plot_predictions", "plots", "stats",
]
