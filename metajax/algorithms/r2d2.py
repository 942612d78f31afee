"""R2-D2: ridge regression as a differentiable base learner (Bertinetto et al., 2019).

Bertinetto, Henriques, Torr & Vedaldi, "Meta-learning with differentiable
closed-form solvers", ICLR 2019. The support embeddings ``X`` (``S x D``,
with a column of ones appended for the bias) are regressed onto one-hot
targets ``Y`` (``S x C``) by ridge regression, whose solution is written in
the ``S x S`` space through the Woodbury identity (eq. 4-5), cheap because
``S = N K`` (ways times shots) is far smaller than ``D``:

    W = (X^T X + lambda I)^{-1} X^T Y = X^T (X X^T + lambda I)^{-1} Y.

Query logits are the regression outputs, rescaled by the learned scalars
``alpha`` (scale) and ``beta`` (offset) of the paper's "adjust" layer, and
trained with softmax cross-entropy:

    logits = alpha * [X_q, 1] W + beta.

``lambda``, ``alpha`` and ``beta`` are meta-parameters next to the
backbone's; ``lambda = exp(params['log_lambda'])`` stays positive. As in the
reference code (which scales ``X`` and ``Y`` by ``1/sqrt(S)`` before
solving), ``lambda`` is per support example: the solve uses ``S * lambda``,
so its meaning does not change with the number of ways and shots.

``form='primal'`` solves the ``(D+1) x (D+1)`` system instead (the same
``W``), cheaper only when ``S > D + 1``. The reference backbone concatenates
the features of its last two blocks; here any backbone works (default
``Conv4(num_outputs=None)``).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import jax.scipy.linalg

from metajax.algorithms.embedding import EmbeddingLearner, mask_absent

FORMS = ("woodbury", "primal")


def with_bias_column(x: jax.Array) -> jax.Array:
  """``(N, D) -> (N, D + 1)``: a trailing column of ones (the bias input)."""
  return jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], -1)


def ridge_woodbury(x: jax.Array, y: jax.Array, lam) -> jax.Array:
  """Ridge weights ``X^T (X X^T + lam I)^{-1} Y`` (an ``S x S`` solve).

  Args:
    x: ``(S, D)`` inputs. y: ``(S, C)`` targets. lam: ridge ``lambda > 0``.

  Returns:
    ``(D, C)`` weights minimising ``||X W - Y||^2 + lam ||W||^2``.
  """
  a = x @ x.T + lam * jnp.eye(x.shape[0], dtype=x.dtype)
  return x.T @ jax.scipy.linalg.solve(a, y, assume_a="pos")


def ridge_primal(x: jax.Array, y: jax.Array, lam) -> jax.Array:
  """The same weights from the ``D x D`` normal equations.

  Solves ``(X^T X + lam I) W = X^T Y``; cheaper than Woodbury when ``S > D``.
  """
  a = x.T @ x + lam * jnp.eye(x.shape[1], dtype=x.dtype)
  return jax.scipy.linalg.solve(a, x.T @ y, assume_a="pos")


@dataclasses.dataclass(frozen=True, eq=False)
class R2D2(EmbeddingLearner):
  """R2-D2: a ridge-regression head with learned ``lambda``, scale and offset.

  The head (per task) is ``(W (D + 1, C), counts (C,))``.

  Attributes:
    init_lambda: initial ridge ``lambda`` (per support example).
    learn_lambda: meta-learn ``log lambda`` (else it stays at the initial
      value and gets no gradient).
    init_scale: initial output scale ``alpha``.
    init_bias: initial output offset ``beta``.
    form: ``'woodbury'`` (``S x S`` solve, the paper) or ``'primal'``.
    (``model``, ``embedding``, ``ways``: see :class:`EmbeddingLearner`;
    ``registry.make('r2d2', model, setting=...)`` applies the paper's
    settings, :mod:`metajax.configs.r2d2`.)
  """
  init_lambda: float = 50.0
  learn_lambda: bool = True
  init_scale: float = 1e-4
  init_bias: float = 0.0
  form: str = "woodbury"

  def __post_init__(self):
    super().__post_init__()
    if self.init_lambda <= 0:
      raise ValueError(f"init_lambda must be > 0, got {self.init_lambda}")
    if self.form not in FORMS:
      raise ValueError(f"unknown form {self.form!r}; choose one of {FORMS}")

  def init_head(self, rng, features):
    del rng
    dt = features.dtype
    params = {"scale": jnp.asarray(self.init_scale, dt),
              "bias": jnp.asarray(self.init_bias, dt)}
    if self.learn_lambda:
      params["log_lambda"] = jnp.asarray(math.log(self.init_lambda), dt)
    return params

  def ridge_lambda(self, params):
    """The ridge ``lambda`` (per support example) under ``params``."""
    if self.learn_lambda:
      return jnp.exp(params["log_lambda"])
    return self.init_lambda

  def fit_head(self, params, features, labels, num_classes, *, training=True):
    del training
    x = with_bias_column(features)
    y = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)
    lam = x.shape[0] * self.ridge_lambda(params)
    solve = ridge_woodbury if self.form == "woodbury" else ridge_primal
    return solve(x, y, lam), jnp.sum(y, 0)

  def head_logits(self, params, head, features):
    w, counts = head
    out = with_bias_column(features) @ w
    return mask_absent(params["scale"] * out + params["bias"], counts)
