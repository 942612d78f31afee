"""Summary statistics for evaluation over many test tasks."""
from __future__ import annotations

import numpy as np


def mean_ci95(values, axis: int = 0):
  """Mean and 95% confidence half-width ``1.96 * sd / sqrt(n)``.

  ``sd`` is the population standard deviation (``ddof=0``), as in the MAML
  and ProtoNets evaluation scripts. Returns ``(mean, half_width)`` reduced
  over ``axis``.
  """
  v = np.asarray(values, dtype=np.float64)
  n = v.shape[axis]
  if n == 0:
    raise ValueError("no values to summarise")
  return v.mean(axis), 1.96 * v.std(axis) / np.sqrt(n)
