"""Figures of evaluated tasks, written as PNG files without a display.

Kept out of the learners (a CNP computes a predictive distribution, drawing
it is evaluation's job) so that importing a learner never pulls in
matplotlib; matplotlib is imported only when a figure is drawn.
"""
from __future__ import annotations

import numpy as np


def plot_predictions(path, target_x, target_y, context_x, context_y, mean,
                     stddev, *, title: str | None = None, num_std: float = 2.0):
  """Saves a PNG of one task's predictive mean +- ``num_std`` sigma.

  Draws the ground truth at the targets (black), the context points (dots),
  the predictive mean (blue) and its uncertainty band, with matplotlib's Agg
  backend (no display needed).

  Args:
    path: output file (``.png``).
    target_x, target_y, mean, stddev: ``(N, 1)`` or ``(N,)`` arrays of one
      task.
    context_x, context_y: ``(n, 1)`` or ``(n,)``.
    title: optional axes title.
    num_std: half-width of the band in standard deviations.

  Returns:
    ``path``.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  def flat(name, a):
    a = np.asarray(a, np.float64)
    if a.ndim == 2 and a.shape[1] == 1:
      a = a[:, 0]
    if a.ndim != 1:
      raise ValueError(f"{name} must be (N,) or (N, 1) for a 1-D plot, got "
                       f"shape {a.shape}")
    return a

  tx, ty, mu, sd = (flat(n, a) for n, a in (
      ("target_x", target_x), ("target_y", target_y), ("mean", mean),
      ("stddev", stddev)))
  cx, cy = flat("context_x", context_x), flat("context_y", context_y)
  if not len(tx) == len(ty) == len(mu) == len(sd):
    raise ValueError(
        f"target_x/target_y/mean/stddev lengths differ: {len(tx)}/{len(ty)}/"
        f"{len(mu)}/{len(sd)}")
  if len(cx) != len(cy):
    raise ValueError(f"context_x has {len(cx)} points, context_y {len(cy)}")
  order = np.argsort(tx)
  tx, ty, mu, sd = tx[order], ty[order], mu[order], sd[order]
  fig = Figure(figsize=(6, 4), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  ax.plot(tx, ty, "k:", linewidth=2, label="ground truth")
  ax.plot(cx, cy, "ko", markersize=6, label="context")
  ax.plot(tx, mu, "b", linewidth=2, label="predictive mean")
  ax.fill_between(tx, mu - num_std * sd, mu + num_std * sd, alpha=0.25,
                  facecolor="#65c9f7", label=f"+-{num_std:g} sigma")
  ax.legend(loc="upper right", fontsize="small")
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, format="png")
  return path
