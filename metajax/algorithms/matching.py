"""Matching Networks (Vinyals et al., 2016), with full context embeddings.

Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, "Matching Networks for
One Shot Learning", NeurIPS 2016. A query ``x`` is labelled by attention over
the support set ``{(x_i, y_i)}``:

    y_hat = sum_i a(x, x_i) y_i,                                (eq. 1)
    a(x, x_i) = exp(c(f(x), g(x_i))) / sum_j exp(c(f(x), g(x_j))),  (eq. 2)

with ``c`` the cosine similarity and ``y_i`` one-hot, so ``y_hat`` is a
distribution over classes and the loss is ``-log y_hat[y]`` on the query set.
Here ``log y_hat[k] = logsumexp_{i: y_i = k} s_i - logsumexp_i s_i`` with
``s_i = c(f(x), g(x_i)) / temperature`` (``temperature=1``: the paper).

Without full context embeddings (FCE), ``f = g = `` the backbone ``f'``.
With ``fce=True`` (Appendix A.2, A.1):

* support: ``g(x_i) = h_i^fwd + h_i^bwd + g'(x_i)``, the sum of a
  bidirectional LSTM's states over the support sequence and a skip
  connection (the support order is the sequence order);
* query, ``K`` steps of an attention LSTM over ``g``::

    h_hat_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})
    h_k = h_hat_k + f'(x)
    r_k = sum_i softmax_i(h_k . g(x_i)) g(x_i)
    f(x) = h_K

  started from ``h_0 = f'(x)`` (the skip connection of a zero LSTM output),
  ``c_0 = 0``; the LSTM's hidden input is the concatenation ``[h, r]`` of
  width ``2D`` and its state is ``D`` wide. ``K`` is not given in the paper;
  ``fce_steps`` defaults to 5.

The LSTMs' parameters are meta-parameters ``params['fce']``. Logits are the
log-probabilities ``log y_hat`` of shape ``(Q, C)`` (``-inf`` for classes
absent from the support set).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.algorithms.embedding import EmbeddingLearner


def cosine_similarity(a: jax.Array, b: jax.Array,
                      eps: float = 1e-8) -> jax.Array:
  """``(N, M)`` cosine similarities between the rows of ``a`` and ``b``."""
  an = a / jnp.sqrt(jnp.sum(a * a, -1, keepdims=True) + eps)
  bn = b / jnp.sqrt(jnp.sum(b * b, -1, keepdims=True) + eps)
  return an @ bn.T


def attention(query_features: jax.Array, support_features: jax.Array,
              temperature: float = 1.0) -> jax.Array:
  """``(Q, S)`` attention ``a(x, x_i)``: softmax_i of cosine / temperature."""
  return jax.nn.softmax(
      cosine_similarity(query_features, support_features) / temperature, -1)


def class_log_probs(scores: jax.Array, labels: jax.Array,
                    num_classes: int) -> jax.Array:
  """``log sum_{i: y_i = k} softmax(scores)_i``: ``(Q, S)`` -> ``(Q, C)``.

  Classes without support examples get ``-inf``.
  """
  onehot = jax.nn.one_hot(labels, num_classes, dtype=bool)  # (S, C)
  # A large finite fill (not -inf) keeps the logsumexp of an absent class,
  # and so its gradient, finite; the class is masked to -inf afterwards.
  fill = jnp.finfo(scores.dtype).min / 2
  per_class = jnp.where(onehot[None], scores[:, :, None], fill)  # (Q, S, C)
  lp = (jax.nn.logsumexp(per_class, axis=1)
        - jax.nn.logsumexp(scores, axis=1, keepdims=True))
  return jnp.where(jnp.any(onehot, 0), lp, -jnp.inf)


class LSTMCell(nn.Module):
  """LSTM cell whose hidden input may be wider than its state.

  ``((c, h), x) -> ((c', h'), h')`` with ``c'``, ``h'`` of width
  ``features``; ``h`` may have any width (the attention LSTM feeds
  ``[h, r]``). Gates: ``[i, f, o, u] = W [x, h] + b``,
  ``c' = sigmoid(f) c + sigmoid(i) tanh(u)``, ``h' = sigmoid(o) tanh(c')``.
  """
  features: int

  @nn.compact
  def __call__(self, carry, x):
    c, h = carry
    z = nn.Dense(4 * self.features, name="gates")(jnp.concatenate([x, h], -1))
    i, f, o, u = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(u)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h


class FullContextEmbedding(nn.Module):
  """The FCE functions ``g`` (support) and ``f`` (query) of Appendix A.

  Attributes:
    features: embedding width ``D`` (the backbone's).
    steps: attention-LSTM steps ``K``.
  """
  features: int
  steps: int = 5

  def setup(self):
    def scanned(reverse):
      # One cell's parameters shared over the support sequence.
      return nn.scan(LSTMCell, variable_broadcast="params",
                     split_rngs={"params": False}, in_axes=0, out_axes=0,
                     reverse=reverse)(self.features)
    self.support_fwd = scanned(False)
    self.support_bwd = scanned(True)
    self.query_att = LSTMCell(self.features)

  def support(self, g_prime: jax.Array) -> jax.Array:
    """``(S, D) -> (S, D)``: bi-LSTM states plus skip connection."""
    zero = jnp.zeros((self.features,), g_prime.dtype)
    _, h_fwd = self.support_fwd((zero, zero), g_prime)
    _, h_bwd = self.support_bwd((zero, zero), g_prime)
    return h_fwd + h_bwd + g_prime

  def query(self, f_prime: jax.Array, g: jax.Array) -> jax.Array:
    """``(Q, D)`` query embeddings after ``steps`` attention reads of ``g``."""
    def read(h):
      return jax.nn.softmax(h @ g.T, -1) @ g

    h, c = f_prime, jnp.zeros_like(f_prime)
    r = read(h)
    for _ in range(self.steps):
      (c, h_hat), _ = self.query_att((c, jnp.concatenate([h, r], -1)),
                                     f_prime)
      h = h_hat + f_prime
      r = read(h)
    return h

  def __call__(self, g_prime, f_prime):
    g = self.support(g_prime)
    return g, self.query(f_prime, g)


@dataclasses.dataclass(frozen=True, eq=False)
class MatchingNet(EmbeddingLearner):
  """Matching Networks: cosine attention over the support set.

  The head (per task) is ``(g (S, D) support embeddings, labels (S,))``;
  logits are ``log y_hat`` ``(Q, C)``.

  Attributes:
    fce: use full context embeddings (bi-LSTM over the support set,
      attention LSTM for queries).
    fce_steps: attention-LSTM steps ``K``.
    temperature: divides the cosine similarities (1: the paper).
    (``model``, ``embedding``, ``ways``: see :class:`EmbeddingLearner`;
    ``registry.make('matchingnet', model, setting=...)`` applies the
    paper's settings, :mod:`metajax.configs.matching`.)
  """
  fce: bool = False
  fce_steps: int = 5
  temperature: float = 1.0

  def __post_init__(self):
    super().__post_init__()
    if self.fce_steps < 1:
      raise ValueError(f"fce_steps must be >= 1, got {self.fce_steps}")
    if self.temperature <= 0:
      raise ValueError(f"temperature must be > 0, got {self.temperature}")

  def fce_module(self, features: int) -> FullContextEmbedding:
    return FullContextEmbedding(features, self.fce_steps)

  def init_head(self, rng, features):
    if not self.fce:
      return {}
    d = features.shape[-1]
    return {"fce": self.fce_module(d).init(rng, features, features)["params"]}

  def fit_head(self, params, features, labels, num_classes, *, training=True):
    del training, num_classes
    g = features
    if self.fce:
      g = self.fce_module(features.shape[-1]).apply(
          {"params": params["fce"]}, features,
          method=FullContextEmbedding.support)
    return g, labels

  def head_logits(self, params, head, features):
    g, labels = head
    f = features
    if self.fce:
      f = self.fce_module(features.shape[-1]).apply(
          {"params": params["fce"]}, features, g,
          method=FullContextEmbedding.query)
    scores = cosine_similarity(f, g) / self.temperature
    return class_log_probs(scores, labels,
                           self.ways if self.ways is not None else g.shape[0])
