"""Sinusoid tasks: MAML's task distribution.

The ``experiments.sinusoid`` entry point is tested end to end in
``tests/experiments/test_sinusoid_experiment.py``.
"""
from __future__ import annotations

import math

import jax
import numpy as np

from metajax.data import sinusoid


def test_sampler_follows_mamls_distribution():
  tasks, p = sinusoid.sample_tasks(jax.random.PRNGKey(0), 2000, 10, 7,
                                   return_params=True)
  assert tasks.support_x.shape == (2000, 10, 1) and tasks.query_y.shape == (2000, 7, 1)
  a, ph = np.asarray(p.amplitude), np.asarray(p.phase)
  assert 0.1 <= a.min() and a.max() <= 5.0 and 0 <= ph.min() and ph.max() <= math.pi
  np.testing.assert_allclose(a.mean(), 2.55, atol=0.1)
  x = np.asarray(tasks.support_x)
  assert -5 <= x.min() and x.max() <= 5
  np.testing.assert_allclose(
      tasks.query_y, p.amplitude[:, None, None] * np.sin(tasks.query_x - p.phase[:, None, None]),
      rtol=1e-5, atol=1e-5)
  same = sinusoid.sample_tasks(jax.random.PRNGKey(0), 2000, 10, 7)
  np.testing.assert_array_equal(same.support_x, tasks.support_x)
