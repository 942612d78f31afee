"""Prototypical Networks (Snell et al., 2017).

Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning",
NeurIPS 2017. An embedding ``f_phi`` maps every image to a vector; class
``c``'s prototype is the mean embedding of its support examples and a query
is classified by a softmax over negative squared Euclidean distances:

    c_k = 1/|S_k| sum_{(x_i, y_i) in S_k} f_phi(x_i),
    p(y = k | x) = softmax_k(-||f_phi(x) - c_k||^2),
    J(phi) = -log p(y = k | x) averaged over the query set (eq. 1-2).

There is no inner loop: "adaptation" is computing the prototypes, and the
meta-gradient is ordinary backpropagation through the embedding.

The base class, its ``ways`` and batch-norm ``embedding`` policies are
described in :mod:`metajax.algorithms.embedding`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from metajax.algorithms.embedding import EmbeddingLearner, mask_absent


def prototypes(features: jax.Array, labels: jax.Array, num_classes: int):
  """Class means of the support embeddings.

  Args:
    features: ``(S, D)`` support embeddings.
    labels: ``(S,)`` integer labels in ``[0, num_classes)``.
    num_classes: ``C``.

  Returns:
    ``(protos, counts)``: ``(C, D)`` prototypes (zeros for classes without
    support examples) and ``(C,)`` counts.
  """
  onehot = jax.nn.one_hot(labels, num_classes, dtype=features.dtype)
  counts = jnp.sum(onehot, axis=0)
  # max(count, 1): an absent class must not produce 0/0, whose NaN would leak
  # into the gradient through the mask's jnp.where.
  protos = onehot.T @ features / jnp.maximum(counts, 1.0)[:, None]
  return protos, counts


def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """``(N, M)`` squared Euclidean distances between rows of ``a`` and ``b``."""
  # Expanded form ||a||^2 - 2 a.b + ||b||^2: one matmul instead of an
  # (N, M, D) difference tensor. Clamped at 0 against cancellation.
  d = (jnp.sum(a * a, -1)[:, None] - 2.0 * a @ b.T + jnp.sum(b * b, -1)[None])
  return jnp.maximum(d, 0.0)


def proto_logits(query_features: jax.Array, protos: jax.Array,
                 counts: jax.Array) -> jax.Array:
  """``(Q, C)`` logits ``-||f(x) - c_k||^2``, ``-inf`` for absent classes."""
  return mask_absent(-squared_distances(query_features, protos), counts)


@dataclasses.dataclass(frozen=True, eq=False)
class ProtoNet(EmbeddingLearner):
  """Prototypical Networks: softmax over ``-||f(x) - c_k||^2``.

  The head (per task state) is ``(prototypes (C, D), counts (C,))``. Any
  ways and shots may differ between meta-training and meta-test; see the
  module docstring for ``ways`` and ``embedding`` (default ``'joint'``, as in
  the reference code). ``registry.make('protonet', model, setting=...)``
  applies the paper's settings (:mod:`metajax.configs.protonet`).
  """
  def fit_head(self, params, features, labels, num_classes, *, training=True):
    del params, training
    return prototypes(features, labels, num_classes)

  def head_logits(self, params, head, features):
    del params
    protos, counts = head
    return proto_logits(features, protos, counts)
