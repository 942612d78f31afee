"""Test-time heads of the transfer baselines: pure functions of features.

Each head is fitted on one task's support features and scores its query
features; every function here is a pure, jit-compilable function of arrays
with static shapes, so :mod:`metajax.algorithms.transfer` vmaps it over test
tasks. Features come from a frozen, pretrained backbone.

* Baseline / Baseline++ (Chen et al. 2019): a new linear or cosine head
  trained on the support features by the official code's loop: 100 epochs of
  minibatches of 4, SGD with learning rate 0.01, momentum 0.9, dampening 0.9
  and weight decay 0.001 (PyTorch's update, first step included):
  :func:`fit_sgd_head`. The cosine head is ``distLinear``: logits
  ``s * <x / (||x|| + 1e-5), g_c v_c / ||v_c||>`` with the weight-normalised
  class vectors ``g_c v_c / ||v_c||`` (:func:`cosine_logits`).
* RFS-simple (Tian et al. 2020): multinomial logistic regression with an L2
  penalty (scikit-learn's ``LogisticRegression(C=1)``, the official
  ``meta_eval.py``) on L2-normalised features, solved to convergence by
  Newton's method with conjugate-gradient steps: :func:`fit_logistic_regression`.
  It minimises

      sum_i [logsumexp(W x_i + b) - (W x_i + b)_{y_i}] + ||W||^2 / (2 C)

  (the intercept unpenalised), scikit-learn's objective divided by ``C``.
* SimpleShot (Wang et al. 2019): "CL2N" features, centred on the mean
  feature of the base (training) classes and L2-normalised, then the nearest
  class centroid by Euclidean distance (:func:`simpleshot_centroids`,
  :func:`simpleshot_logits`; logits are
  negative squared distances, so the argmax is the nearest centroid).
* Meta-Baseline (Chen et al. 2021): class centroids of the raw features,
  L2-normalised, against normalised queries, scaled by a learned temperature
  (:func:`cosine_centroids`, :func:`cosine_centroid_logits`).

References:
  Chen, Liu, Kira, Wang & Huang, "A Closer Look at Few-shot
  Classification", ICLR 2019; code wyharveychen/CloserLookFewShot
  (``methods/baselinefinetune.py``, ``backbone.py: distLinear``).
  Tian, Wang, Krishnan, Tenenbaum & Isola, "Rethinking Few-Shot Image
  Classification: a Good Embedding Is All You Need?", ECCV 2020; code
  WangYueFt/rfs (``eval/meta_eval.py``).
  Wang, Chao, Weinberger & van der Maaten, "SimpleShot: Revisiting
  Nearest-Neighbor Classification for Few-Shot Learning", arXiv:1911.04623;
  code mileyan/simple_shot (``src/train.py: metric_class_type``).
  Chen, Liu, Xu, Darrell & Wang, "Meta-Baseline: Exploring Simple
  Meta-Learning for Few-Shot Learning", ICCV 2021; code
  yinboc/few-shot-meta-baseline (``models/meta_baseline.py``).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from metajax.algorithms.embedding import mask_absent
from metajax.algorithms.protonet import prototypes, squared_distances

#: distLinear's epsilon on the feature norm.
COSINE_EPS = 1e-5


def l2_normalize(x: jax.Array, eps: float = 0.0) -> jax.Array:
  """Rows of ``x`` divided by their Euclidean norm (plus ``eps``)."""
  return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + eps)


def cosine_scale(num_classes: int) -> float:
  """distLinear's fixed scale: 2 up to 200 classes, else 10 (the code's
  value for Omniglot's thousands of pretraining classes)."""
  return 2.0 if num_classes <= 200 else 10.0


# ---------------------------------------------------------------------------
# linear and cosine heads (Baseline, Baseline++)
# ---------------------------------------------------------------------------
class LinearHead(NamedTuple):
  """``logits = x @ kernel + bias``; ``kernel`` ``(D, C)``, ``bias`` ``(C,)``."""
  kernel: jax.Array
  bias: jax.Array


class CosineHead(NamedTuple):
  """distLinear: class vectors ``gain[c] * direction[c] / ||direction[c]||``
  (``direction`` ``(C, D)``, ``gain`` ``(C,)``: PyTorch's weight norm)."""
  direction: jax.Array
  gain: jax.Array


def init_linear(rng, dim: int, num_classes: int, *, zero_bias: bool = False,
                dtype=jnp.float32) -> LinearHead:
  """PyTorch's ``nn.Linear`` initialisation: weights and bias uniform in
  ``+-1/sqrt(D)`` (the bias zero when ``zero_bias``, as the pretraining
  classifier of ``BaselineTrain``)."""
  k_w, k_b = jax.random.split(rng)
  bound = 1.0 / math.sqrt(dim)
  kernel = jax.random.uniform(k_w, (dim, num_classes), dtype, -bound, bound)
  bias = (jnp.zeros((num_classes,), dtype) if zero_bias else
          jax.random.uniform(k_b, (num_classes,), dtype, -bound, bound))
  return LinearHead(kernel, bias)


def init_cosine(rng, dim: int, num_classes: int, *, dtype=jnp.float32
                ) -> CosineHead:
  """distLinear's initialisation: ``nn.Linear`` weights, weight norm's gain
  set to each row's norm (so the class vectors start as those rows)."""
  bound = 1.0 / math.sqrt(dim)
  direction = jax.random.uniform(rng, (num_classes, dim), dtype, -bound, bound)
  return CosineHead(direction, jnp.linalg.norm(direction, axis=-1))


def linear_logits(head: LinearHead, features: jax.Array) -> jax.Array:
  """``(N, C)`` logits of a :class:`LinearHead`."""
  return features @ head.kernel + head.bias


def cosine_logits(head: CosineHead, features: jax.Array, scale: float
                  ) -> jax.Array:
  """``(N, C)`` distLinear logits ``scale * <x / (||x|| + 1e-5), w_c>``."""
  weights = head.gain[:, None] * l2_normalize(head.direction)
  return scale * l2_normalize(features, COSINE_EPS) @ weights.T


def _cross_entropy(logits, labels):
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def fit_sgd_head(features: jax.Array, labels: jax.Array, num_classes: int, *,
                 kind: str = "linear", rng, epochs: int = 100,
                 batch_size: int = 4, lr: float = 0.01, momentum: float = 0.9,
                 dampening: float = 0.9, weight_decay: float = 1e-3,
                 scale: float = 2.0):
  """A new linear (``kind='linear'``) or cosine (``'cosine'``) head trained
  on frozen support features as ``BaselineFinetune.set_forward_adaptation``.

  Each epoch visits the support set in a fresh random order, in minibatches
  of ``batch_size`` (the last one smaller when it does not divide), with one
  SGD step per minibatch on the mean cross-entropy. The update is PyTorch's
  ``SGD(momentum, dampening, weight_decay)``: ``g = grad + wd * p``; the
  momentum buffer is ``g`` on the first step and ``momentum * buf +
  (1 - dampening) * g`` after; ``p -= lr * buf``.

  Args:
    features: ``(S, D)`` support features (not differentiated).
    labels: ``(S,)`` labels in ``[0, num_classes)``.
    num_classes: the head's outputs.
    kind: ``'linear'`` or ``'cosine'``.
    rng: the head's initialisation and the epochs' orders.
    scale: the cosine head's fixed scale.

  Returns:
    The fitted :class:`LinearHead` or :class:`CosineHead`.
  """
  features = jax.lax.stop_gradient(jnp.asarray(features))
  labels = jnp.asarray(labels)
  s, d = features.shape
  k_init, k_order = jax.random.split(rng)
  if kind == "linear":
    params = init_linear(k_init, d, num_classes, dtype=features.dtype)
    logits_fn = linear_logits
  elif kind == "cosine":
    params = init_cosine(k_init, d, num_classes, dtype=features.dtype)
    logits_fn = lambda h, f: cosine_logits(h, f, scale)  # noqa: E731
  else:
    raise ValueError(f"unknown head kind {kind!r}; choose 'linear' or "
                     "'cosine'")

  def loss(p, idx):
    return _cross_entropy(logits_fn(p, features[idx]), labels[idx])

  def sgd(p, buf, idx, first):
    grad = jax.grad(loss)(p, idx)
    g = jax.tree_util.tree_map(lambda gr, w: gr + weight_decay * w, grad, p)
    buf = jax.tree_util.tree_map(
        lambda b, gi: jnp.where(first, gi, momentum * b + (1 - dampening) * gi),
        buf, g)
    return jax.tree_util.tree_map(lambda w, b: w - lr * b, p, buf), buf

  starts = range(0, s, batch_size)

  def epoch(carry, e):
    p, buf = carry
    order = jax.random.permutation(jax.random.fold_in(k_order, e), s)
    for i in starts:  # static minibatch sizes
      p, buf = sgd(p, buf, order[i:i + batch_size], (e == 0) & (i == 0))
    return (p, buf), None

  buf0 = jax.tree_util.tree_map(jnp.zeros_like, params)
  (params, _), _ = jax.lax.scan(epoch, (params, buf0), jnp.arange(epochs))
  return params


# ---------------------------------------------------------------------------
# logistic regression (RFS-simple)
# ---------------------------------------------------------------------------
def _conjugate_gradient(matvec, b, steps: int):
  """``steps`` iterations of CG on ``A x = b`` from 0 (``A`` PSD; a
  converged residual stops changing ``x``)."""
  def body(_, carry):
    x, r, p, rr = carry
    ap = matvec(p)
    pap = jnp.vdot(p, ap)
    alpha = jnp.where(pap > 0, rr / jnp.where(pap > 0, pap, 1.0), 0.0)
    x, r = x + alpha * p, r - alpha * ap
    rr_new = jnp.vdot(r, r)
    beta = jnp.where(rr > 0, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
    return x, r, r + beta * p, rr_new

  zero = jnp.zeros_like(b)
  return jax.lax.fori_loop(0, steps, body, (zero, b, b, jnp.vdot(b, b)))[0]


def logistic_objective(head: LinearHead, features, labels, c: float):
  """``sum_i CE_i + ||kernel||^2 / (2 c)`` (intercept unpenalised)."""
  logits = linear_logits(head, features)
  ce = jnp.sum(jax.nn.logsumexp(logits, -1)
               - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0])
  return ce + 0.5 / c * jnp.sum(head.kernel ** 2)


#: the step sizes Newton's line search tries, largest first.
_LINE_SEARCH = 0.5 ** np.arange(8)


def fit_logistic_regression(features: jax.Array, labels: jax.Array,
                            num_classes: int, *, c: float = 1.0,
                            newton_steps: int = 30, cg_steps: int = 50
                            ) -> LinearHead:
  """Multinomial logistic regression with an L2 penalty, solved by Newton-CG.

  Minimises :func:`logistic_objective` (scikit-learn's
  ``LogisticRegression(C=c)`` objective up to the factor ``c``, so the same
  minimiser) from zero. Each Newton step solves ``H d = -g`` with ``cg_steps``
  conjugate-gradient iterations on Hessian-vector products, then takes the
  largest step of ``1, 1/2, ..., 1/128`` that satisfies Armijo's condition
  (the smallest when none does). The objective is strongly convex in the
  kernel (Hessian at least ``1/c``) and flat only along a shift of all
  intercepts, which changes no probability; so the fitted probabilities are
  unique and the solver's are those of scikit-learn's converged solution.

  Args:
    features: ``(S, D)`` features (RFS: L2-normalised).
    labels: ``(S,)`` labels in ``[0, num_classes)``.
    num_classes: the classifier's outputs.
    c: the inverse penalty strength (scikit-learn's ``C``).
    newton_steps, cg_steps: iterations (fixed, so the function has static
      cost; the defaults reach float32 precision on few-shot sizes).
  """
  features = jax.lax.stop_gradient(jnp.asarray(features))
  labels = jnp.asarray(labels)
  d = features.shape[1]
  f = lambda h: logistic_objective(h, features, labels, c)  # noqa: E731
  head = LinearHead(jnp.zeros((d, num_classes), features.dtype),
                    jnp.zeros((num_classes,), features.dtype))
  flat0, unravel = jax.flatten_util.ravel_pytree(head)
  fv = lambda v: f(unravel(v))  # noqa: E731
  grad = jax.grad(fv)

  def newton(_, v):
    g = grad(v)
    hvp = lambda u: jax.jvp(grad, (v,), (u,))[1]  # noqa: E731
    step = -_conjugate_gradient(hvp, g, cg_steps)
    ts = jnp.asarray(_LINE_SEARCH, v.dtype)
    values = jax.vmap(lambda t: fv(v + t * step))(ts)
    ok = values <= fv(v) + 1e-4 * ts * jnp.vdot(g, step)
    t = jnp.where(jnp.any(ok), ts[jnp.argmax(ok)], ts[-1])
    return v + t * step

  return unravel(jax.lax.fori_loop(0, newton_steps, newton, flat0))


# ---------------------------------------------------------------------------
# centroid heads (SimpleShot, Meta-Baseline)
# ---------------------------------------------------------------------------
def centre_and_normalize(features: jax.Array, mean: jax.Array) -> jax.Array:
  """SimpleShot's CL2N: ``(x - mean) / ||x - mean||``."""
  return l2_normalize(features - mean)


def simpleshot_centroids(support: jax.Array, labels: jax.Array,
                         num_classes: int, mean: jax.Array):
  """``(centroids (C, D), counts (C,))``: class means of the CL2N support
  features (not renormalised, as ``metric_class_type``)."""
  return prototypes(centre_and_normalize(support, mean), labels, num_classes)


def simpleshot_logits(query: jax.Array, centroids: jax.Array,
                      counts: jax.Array, mean: jax.Array) -> jax.Array:
  """``(Q, C)`` SimpleShot logits ``-||CL2N(q) - c_k||^2`` (the argmax is the
  nearest centroid; ``-inf`` for classes without support)."""
  return mask_absent(-squared_distances(centre_and_normalize(query, mean),
                                        centroids), counts)


def _unit(x):
  # F.normalize: the norm floored at 1e-12
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_centroids(support: jax.Array, labels: jax.Array,
                     num_classes: int):
  """``(centroids, counts)``: Meta-Baseline's class means of the raw support
  features, L2-normalised (norms floored at 1e-12, as ``F.normalize``)."""
  centroids, counts = prototypes(support, labels, num_classes)
  return _unit(centroids), counts


def cosine_centroid_logits(query: jax.Array, centroids: jax.Array,
                           counts: jax.Array, temperature) -> jax.Array:
  """``(Q, C)`` Meta-Baseline logits ``temperature * <q/||q||, c_k>`` for
  :func:`cosine_centroids` ``c_k`` (``-inf`` for classes without support)."""
  return mask_absent(temperature * _unit(query) @ centroids.T, counts)


__all__ = [
    "CosineHead", "LinearHead", "centre_and_normalize", "cosine_centroids",
    "cosine_centroid_logits", "cosine_logits", "cosine_scale", "fit_sgd_head",
    "fit_logistic_regression", "init_cosine", "init_linear", "l2_normalize",
    "linear_logits", "logistic_objective", "simpleshot_centroids",
    "simpleshot_logits",
]
