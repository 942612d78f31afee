"""Figures of evaluated tasks: a CNP's predictive band as a PNG."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from PIL import Image

from metajax.data import gp
from metajax.evaluation.plots import plot_predictions


def test_plot_writes_png(tmp_path):
  tasks = gp.sample_tasks(jax.random.PRNGKey(0), 1, testing=True,
                         num_context=5, num_grid=50)
  t = jax.tree_util.tree_map(lambda a: a[0], tasks)
  mean = np.asarray(t.query_y) + 0.1
  sd = np.full_like(mean, 0.2)
  path = plot_predictions(tmp_path / "cnp.png", t.query_x, t.query_y,
                          t.support_x, t.support_y, mean, sd, title="GP")
  img = Image.open(path)
  assert img.format == "PNG" and img.size == (600, 400)
  # Not blank: the curves put many distinct colours on the canvas.
  pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
  assert len(np.unique(pixels, axis=0)) > 20
  with pytest.raises(ValueError, match="lengths differ"):
    plot_predictions(tmp_path / "x.png", t.query_x, t.query_y, t.support_x,
                     t.support_y, mean[:10], sd)
  with pytest.raises(ValueError, match="1-D plot"):
    plot_predictions(tmp_path / "x.png", np.zeros((5, 2)), t.query_y,
                     t.support_x, t.support_y, mean, sd)
