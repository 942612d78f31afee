"""The experiments' shared helpers: per-model metrics that survive a resume."""
from __future__ import annotations

import math

import numpy as np
import pytest

from experiments import common
from metajax.experiment import metrics_log


def _steps(workdir, split):
  return [r["step"] for r in metrics_log.read_metrics(workdir, split=split)]


def test_resumed_model_forgets_only_its_own_rows(tmp_path):
  # MAML finished 0..9; the baseline logged 0..6 and checkpointed at 4.
  with metrics_log.MetricsLog(tmp_path, tensorboard=False) as log:
    common.ModelMetrics(log, "maml")(0, {"loss": np.arange(10.0)})
    common.ModelMetrics(log, "base")(0, {"loss": np.arange(7.0)})
  with metrics_log.MetricsLog(tmp_path, tensorboard=False) as log:
    base = common.ModelMetrics(log, "base")
    base(4, {"loss": np.array([40.0, 50.0, 60.0])})
    base(7, {"loss": np.array([70.0, math.nan])})
  assert _steps(tmp_path, "maml/train") == list(range(10))
  assert _steps(tmp_path, "base/train") == list(range(9))
  losses = [r["loss"] for r in metrics_log.read_metrics(tmp_path, "base/train")]
  assert losses == [0.0, 1.0, 2.0, 3.0, 40.0, 50.0, 60.0, 70.0, None]
  assert base.resumed_from == 4 and base.steps_run == 5


def test_model_that_trains_nothing_leaves_the_log_alone(tmp_path):
  with metrics_log.MetricsLog(tmp_path, tensorboard=False) as log:
    common.ModelMetrics(log, "maml")(0, {"loss": np.arange(3.0)})
    done = common.ModelMetrics(log, "maml")
  assert done.resumed_from is None and done.steps_run == 0
  assert _steps(tmp_path, "maml/train") == [0, 1, 2]


def test_budget_and_checks():
  assert common.budget(70_000, 70_000) == "full"
  assert common.budget(500, 60_000) == "shortened"
  with pytest.raises(ValueError, match="ways must be an integer >= 2"):
    common.check_int("ways", 1, 2)
  with pytest.raises(ValueError, match="ways must be an integer"):
    common.check_int("ways", True, 2)
  with pytest.raises(ValueError, match="meta_lr must be a finite number"):
    common.check_positive("meta_lr", math.inf)
  with pytest.raises(ValueError, match="split must be one of a, b"):
    common.check_choice("split", "c", ("a", "b"))
