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
neural-processes notebook (``metajax.configs.get('cnp', 'gp_1d')``, with its
sources): encoder ``[128] * 4``, decoder ``[128] * 2`` then ``2 * y_dim``
outputs; Adam at 1e-4, batches of 64 GP tasks (its ``outer``,
:mod:`metajax.data.gp`).

Variable context and target counts under fixed shapes: a point whose input
is all ``NaN`` is padding (the convention of :mod:`metajax.data.gp`, whose
random-count batches always have the largest shape). The encoder averages
over the real context points only, the loss and MSE over the real targets
only, so a padded task gives the numbers of its unpadded self (to float
rounding) and a whole run compiles one meta-step. Padding never reaches a
differentiated value (it is replaced by zeros before the networks), so the
gradients are those of the unpadded task too; :meth:`CNP.predict` at a
padding input returns ``NaN``.

Figures of the predictive mean and its band are drawn by
:func:`metajax.evaluation.plots.plot_predictions`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metajax import configs
from metajax.core.learner import Learner
from metajax.core.tasks import Task

# The class defaults are the paper's (notebook's) sizes.
_GP = configs.get("cnp", "gp_1d").learner


class Normal(NamedTuple):
  """Diagonal Gaussian prediction: ``mean``, ``stddev``, each ``(N, y_dim)``."""
  mean: jax.Array
  stddev: jax.Array


def point_mask(x: jax.Array) -> jax.Array:
  """``(..., N)`` bools: the real points of inputs ``x`` (``(..., N, d)``);
  an input that is all ``NaN`` marks a padding point."""
  return ~jnp.all(jnp.isnan(x), axis=-1)


def _zero_padding(a: jax.Array, mask: jax.Array) -> jax.Array:
  """``a`` with its padding rows set to 0 (so no ``NaN`` enters the MLPs)."""
  return jnp.where(mask[..., None], a, jnp.zeros((), a.dtype))


def masked_mean(values: jax.Array, mask: jax.Array, axis: int = -1
                ) -> jax.Array:
  """Mean of ``values`` over ``axis`` where ``mask`` (0 if none is)."""
  total = jnp.sum(jnp.where(mask, values, jnp.zeros((), values.dtype)), axis)
  count = jnp.sum(mask, axis).astype(values.dtype)
  return total / jnp.maximum(count, 1)


def gaussian_log_prob(y: jax.Array, mean: jax.Array,
                      stddev: jax.Array) -> jax.Array:
  """Elementwise ``log N(y; mean, stddev^2)`` (same shape as ``y``)."""
  z = (y - mean) / stddev
  return -0.5 * z * z - jnp.log(stddev) - 0.5 * math.log(2.0 * math.pi)


class _ConcatDense(nn.Module):
  """``nn.Dense`` of ``[r, x]`` for one ``r`` (``(..., R)``) and many ``x``
  (``(..., N, dx)``), without the concatenation: ``r``'s share of the
  product is computed once, not once per target point (a third less time
  for a paper-sized meta-step of 64 padded GP tasks on a 2-core CPU). Its
  parameters (``kernel`` ``(R + dx, features)``, ``bias``), their
  initialisation and dtype promotion are ``nn.Dense``'s."""
  features: int

  @nn.compact
  def __call__(self, r, x):
    size = r.shape[-1]
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (size + x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,),
                      jnp.float32)
    dtype = jnp.result_type(r, x, kernel)
    r, x, kernel, bias = (jnp.asarray(a, dtype) for a in (r, x, kernel, bias))
    return (r @ kernel[:size])[..., None, :] + x @ kernel[size:] + bias


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
    # The decoder's first layer takes [r, x] (see _ConcatDense).
    self.decoder = [(_ConcatDense if i == 0 else nn.Dense)(w)
                    for i, w in enumerate(self.decoder_sizes)]
    self.decoder_out = (nn.Dense if self.decoder_sizes else _ConcatDense)(
        2 * self.y_dim)

  def encode(self, context_x, context_y):
    """``(n, dx), (n, dy) -> (R,)``: mean of the per-point encodings over the
    real (not padding, :func:`point_mask`) context points."""
    mask = point_mask(context_x)
    h = jnp.concatenate([_zero_padding(context_x, mask),
                         _zero_padding(context_y, mask)], -1)
    for i, layer in enumerate(self.encoder):
      h = layer(h)
      if i < len(self.encoder) - 1:
        h = nn.relu(h)
    return masked_mean(h, mask[..., None], axis=-2)

  def decode(self, r, target_x):
    """``(R,), (N, dx) -> Normal`` with ``(N, y_dim)`` mean and stddev:
    ``g([r, x_t])`` at every target input."""
    first, *rest = [*self.decoder, self.decoder_out]
    out = first(r, target_x)
    for layer in rest:
      out = layer(nn.relu(out))
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
  predictive mean). Padding points (inputs all ``NaN``, see the module
  docstring) of either set are left out of every mean.

  Attributes:
    encoder_sizes, decoder_sizes, min_std: see :class:`CNPModel`.
  """
  encoder_sizes: Sequence[int] = _GP["encoder_sizes"]
  decoder_sizes: Sequence[int] = _GP["decoder_sizes"]
  min_std: float = _GP["min_std"]

  classification = False

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

  def metrics(self, pred: Normal, y, mask=None):
    """``loss`` (NLL per target point) and ``mse`` of ``pred`` against ``y``
    (``(N, y_dim)``), averaged over the points where ``mask`` (``(N,)``;
    ``None``: all)."""
    if mask is None:
      mask = jnp.ones(y.shape[:-1], bool)
    lp = jnp.sum(gaussian_log_prob(y, pred.mean, pred.stddev), -1)
    se = jnp.mean(jnp.square(pred.mean - y), -1)
    return {"loss": -masked_mean(lp, mask), "mse": masked_mean(se, mask)}

  def task_loss(self, params, task: Task, *, iteration=0):
    del iteration  # no schedule
    mask = point_mask(task.query_x)
    pred = self.predict(params,
                        self.adapt(params, task.support_x, task.support_y),
                        _zero_padding(task.query_x, mask))
    m = self.metrics(pred, _zero_padding(task.query_y, mask), mask)
    return m["loss"], m

  def evaluate(self, params, task: Task, *, steps=None):
    """Target ``loss`` (NLL) and ``mse``, each of shape ``(1,)``."""
    del steps
    _, m = self.task_loss(params, task)
    return jax.tree_util.tree_map(lambda a: a[None], m)
