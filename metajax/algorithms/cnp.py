"""Conditional Neural Processes (Garnelo et al., 2018) for 1-D regression.

Garnelo, Rosenbaum, Maddison, Ramalho, Saxton, Shanahan, Teh, Rezende &
Eslami, "Conditional Neural Processes", ICML 2018. A task's context set
``{(x_i, y_i)}`` (the support set) is encoded point by point and averaged
into one representation, which conditions a decoder evaluated at each target
input (the query set):

    r_i = h([x_i, y_i]),   r = 1/n sum_i r_i,                (eq. 2-3)
    [mu, s] = g([r, x_t]),  sigma = 0.1 + 0.9 softplus(s),
    loss = -1/|T| sum_t log N(y_t; mu, sigma^2)              (eq. 4)

``h`` and ``g`` are ReLU MLPs (linear last layer); ``sigma`` is bounded
below by 0.1 so the likelihood cannot collapse onto the context points.
There is no inner loop: :meth:`CNP.adapt` is the encoder and aggregation,
:meth:`CNP.predict` the decoder. Default sizes follow DeepMind's
neural-processes notebook (``PAPER_DEFAULTS['gp_1d']``): encoder
``[128] * 4``, decoder ``[128] * 2`` then ``2 * y_dim`` outputs; Adam at
1e-4, batches of 64 GP tasks (``PAPER_OUTER``, :mod:`metajax.data.gp`).

:func:`plot_predictions` draws the predictive mean and a +-2 sigma band
against the ground truth and the context points into a PNG.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metajax.core.learner import Learner
from metajax.core.tasks import Task

# Garnelo et al. (2018), Sec. 4.1, and DeepMind's neural-processes notebook
# (1-D GP regression, metajax.data.gp): encoder [128] * 4, decoder
# [128] * 2 + [2], sigma = 0.1 + 0.9 softplus.
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "gp_1d": dict(encoder_sizes=(128, 128, 128, 128), decoder_sizes=(128, 128),
                  min_std=0.1),
}
# Outer loop: Adam at 1e-4, batches of 64 functions, 2e5 iterations, at most
# 10 context points (random counts, targets include the context).
PAPER_OUTER: dict[str, dict[str, Any]] = {
    "gp_1d": dict(optimizer="adam", meta_lr=1e-4, meta_batch=64,
                  meta_iters=200_000, max_context=10),
}
_GP = PAPER_DEFAULTS["gp_1d"]


class Normal(NamedTuple):
  """Diagonal Gaussian prediction: ``mean``, ``stddev``, each ``(N, y_dim)``."""
  mean: jax.Array
  stddev: jax.Array


def gaussian_log_prob(y: jax.Array, mean: jax.Array,
                      stddev: jax.Array) -> jax.Array:
  """Elementwise ``log N(y; mean, stddev^2)`` (same shape as ``y``)."""
  z = (y - mean) / stddev
  return -0.5 * z * z - jnp.log(stddev) - 0.5 * math.log(2.0 * math.pi)


class CNPModel(nn.Module):
  """Encoder ``h``, mean aggregation and decoder ``g`` of a CNP.

  Attributes:
    encoder_sizes: widths of ``h``'s layers (the last is the representation
      size, linear).
    decoder_sizes: hidden widths of ``g`` (ReLU); a linear layer of
      ``2 * y_dim`` outputs follows.
    min_std: lower bound of ``sigma`` (``min_std + (1 - min_std) softplus``).
    y_dim: target dimension.
  """
  encoder_sizes: Sequence[int] = _GP["encoder_sizes"]
  decoder_sizes: Sequence[int] = _GP["decoder_sizes"]
  min_std: float = _GP["min_std"]
  y_dim: int = 1

  def setup(self):
    self.encoder = [nn.Dense(w) for w in self.encoder_sizes]
    self.decoder = [nn.Dense(w) for w in self.decoder_sizes]
    self.decoder_out = nn.Dense(2 * self.y_dim)

  def encode(self, context_x, context_y):
    """``(n, dx), (n, dy) -> (R,)``: mean of the per-point encodings."""
    h = jnp.concatenate([context_x, context_y], -1)
    for i, layer in enumerate(self.encoder):
      h = layer(h)
      if i < len(self.encoder) - 1:
        h = nn.relu(h)
    return jnp.mean(h, axis=-2)

  def decode(self, r, target_x):
    """``(R,), (N, dx) -> Normal`` with ``(N, y_dim)`` mean and stddev."""
    h = jnp.concatenate(
        [jnp.broadcast_to(r, target_x.shape[:-1] + r.shape[-1:]), target_x], -1)
    for layer in self.decoder:
      h = nn.relu(layer(h))
    out = self.decoder_out(h)
    mean, s = out[..., :self.y_dim], out[..., self.y_dim:]
    return Normal(mean, self.min_std + (1.0 - self.min_std) * nn.softplus(s))

  def __call__(self, context_x, context_y, target_x):
    return self.decode(self.encode(context_x, context_y), target_x)


@dataclasses.dataclass(frozen=True, eq=False)
class CNP(Learner):
  """Conditional Neural Process on the :class:`~metajax.core.learner.Learner` API.

  Support = context, query = targets (inputs ``(N, x_dim)``, float targets
  ``(N, y_dim)``). ``adapt`` returns the representation ``r`` ``(R,)``;
  ``predict`` a :class:`Normal`; ``task_loss`` the mean negative
  log-likelihood of the targets with metrics ``loss`` and ``mse`` (of the
  predictive mean).

  Attributes:
    encoder_sizes, decoder_sizes, min_std: see :class:`CNPModel`.
  """
  encoder_sizes: Sequence[int] = _GP["encoder_sizes"]
  decoder_sizes: Sequence[int] = _GP["decoder_sizes"]
  min_std: float = _GP["min_std"]

  classification = False
  PAPER_DEFAULTS: ClassVar[dict] = PAPER_DEFAULTS
  PAPER_OUTER: ClassVar[dict] = PAPER_OUTER

  @classmethod
  def paper(cls, model=None, setting: str | None = None, **overrides):
    """The CNP with the paper's sizes for ``setting`` (default ``'gp_1d'``).

    ``model`` is accepted for the registry's ``factory(model, **kw)``
    signature and must be ``None``: the CNP builds its own networks.
    """
    if model is not None:
      raise ValueError(
          "CNP builds its own encoder and decoder; pass encoder_sizes / "
          "decoder_sizes instead of a model")
    setting = "gp_1d" if setting is None else setting
    if setting not in PAPER_DEFAULTS:
      raise ValueError(f"unknown paper setting {setting!r} for CNP; choose "
                       f"one of {sorted(PAPER_DEFAULTS)}")
    return cls(**{**PAPER_DEFAULTS[setting], **overrides})

  def __post_init__(self):
    if not self.encoder_sizes:
      raise ValueError("encoder_sizes must name at least one layer")
    if not 0.0 <= self.min_std < 1.0:
      raise ValueError(f"min_std must be in [0, 1), got {self.min_std}")

  def model(self, y_dim: int = 1) -> CNPModel:
    """The flax :class:`CNPModel` for targets of dimension ``y_dim``."""
    return CNPModel(tuple(self.encoder_sizes), tuple(self.decoder_sizes),
                    self.min_std, y_dim)

  @staticmethod
  def y_dim(params) -> int:
    """Target dimension, read off the decoder's output layer."""
    return params["model"]["decoder_out"]["bias"].shape[-1] // 2

  def _check_one(self, x, y, what):
    if np.ndim(x) != 2 or np.ndim(y) != 2:
      raise ValueError(
          f"CNP {what} inputs and targets must be (points, dims), got "
          f"{np.shape(x)} and {np.shape(y)}")

  def init(self, rng, task: Task):
    self._check_one(task.support_x, task.support_y, "context")
    model = self.model(np.shape(task.support_y)[-1])
    return {"model": model.init(rng, task.support_x, task.support_y,
                                task.query_x)["params"]}

  def adapt(self, params, support_x, support_y, *, steps=None):
    """Representation ``r`` ``(R,)`` of the context set (``steps`` ignored)."""
    del steps
    return self.model(self.y_dim(params)).apply(
        {"params": params["model"]}, support_x, support_y,
        method=CNPModel.encode)

  def predict(self, params, state, x) -> Normal:
    """Predictive :class:`Normal` at target inputs ``x`` ``(N, x_dim)``."""
    return self.model(self.y_dim(params)).apply(
        {"params": params["model"]}, state, x, method=CNPModel.decode)

  def metrics(self, pred: Normal, y):
    nll = -jnp.mean(jnp.sum(gaussian_log_prob(y, pred.mean, pred.stddev), -1))
    return {"loss": nll, "mse": jnp.mean(jnp.square(pred.mean - y))}

  def task_loss(self, params, task: Task, *, iteration=0):
    del iteration  # no schedule
    pred = self.predict(params,
                        self.adapt(params, task.support_x, task.support_y),
                        task.query_x)
    m = self.metrics(pred, task.query_y)
    return m["loss"], m

  def evaluate(self, params, task: Task, *, steps=None):
    """Target ``loss`` (NLL) and ``mse``, each of shape ``(1,)``."""
    del steps
    _, m = self.task_loss(params, task)
    return jax.tree_util.tree_map(lambda a: a[None], m)


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
