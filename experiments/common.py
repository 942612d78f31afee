"""What the experiments' ``train.py`` files share beyond metajax.experiment.

* :class:`ModelMetrics`: the ``on_metrics`` callback of one trained model,
  writing its rows under its own split (``"maml_K10/train"``) of the run's
  ``metrics.jsonl``. A run folder can hold several models trained one after
  another (the sinusoid experiment trains MAML and a baseline); a resumed
  model forgets only its own rows past its checkpoint
  (``MetricsLog.truncate_after(step, split=...)``).
* :func:`budget`: ``"full"`` or ``"shortened"``, the label every results file
  carries so that a short run is never read as a reproduction.
* :func:`check_int`, :func:`check_positive`, :func:`check_choice`: the
  checks of the configs' ``validate`` methods, whose messages name the field.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from metajax.experiment import metrics_log as metrics_lib

FULL = "full"
SHORTENED = "shortened"


def check_int(name: str, value, low: int) -> None:
  """``ValueError`` naming ``name`` unless ``value`` is an int ``>= low``."""
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_positive(name: str, value) -> None:
  """``ValueError`` naming ``name`` unless ``value`` is a finite number > 0."""
  if not isinstance(value, (int, float)) or isinstance(value, bool) or not (
      math.isfinite(value) and value > 0):
    raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_choice(name: str, value, choices) -> None:
  """``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
  if value not in choices:
    raise ValueError(
        f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def budget(iterations: int, paper_iterations: int) -> str:
  """``"full"`` if ``iterations`` reaches the paper's count, else
  ``"shortened"``."""
  return FULL if iterations >= paper_iterations else SHORTENED


class ModelMetrics:
  """``on_metrics`` of one model's :func:`metajax.training.fit`.

  Attributes:
    split: the rows' split, ``"<model>/train"``.
    resumed_from: the first step this process trained (``None`` until a
      chunk ran: a model whose checkpoint was already complete trains none).
    steps_run: meta-steps trained by this process.
  """

  def __init__(self, log: metrics_lib.MetricsLog, model: str):
    self.log = log
    self.split = f"{model}/train"
    self.resumed_from: int | None = None
    self.steps_run = 0

  def __call__(self, first_step: int, metrics: Mapping[str, np.ndarray]):
    if self.resumed_from is None:
      self.resumed_from = int(first_step)
      self._forget_from(int(first_step))
    self.log.write_many(first_step, metrics, prefix=self.split)
    self.steps_run += len(np.atleast_1d(next(iter(metrics.values()))))

  def _forget_from(self, step: int) -> None:
    """Drops this model's rows from ``step`` on (logged by an interrupted run
    after its last checkpoint), keeping every other model's rows."""
    self.log.truncate_after(step, split=self.split)
