"""SNAIL (Mishra et al., 2018): a simple neural attentive meta-learner.

The support set and one query are read as a sequence: every support example
is its embedding ``f(x_i)`` concatenated with its one-hot label, followed by
the query's embedding with an all-zero label slot, and the query's label is
predicted at its (last) position. The sequence model interleaves

* temporal-convolution blocks ``TC(T, D)``: dense blocks of causal
  convolutions (kernel 2, dilations 1, 2, 4, ... up to ``ceil(log2 T)``
  blocks), each ``tanh(conv_f(x)) * sigmoid(conv_g(x))`` with ``D`` filters,
  concatenated to its input;
* causal attention blocks ``Att(K, V)``: keys and queries of size ``K``,
  values of size ``V``, ``softmax(q k^T / sqrt(K))`` with every position
  attending only to itself and earlier ones, the read-out concatenated to
  its input;

and ends with a per-position linear layer of ``ways`` outputs. The paper's
few-shot architecture (Sec. 4.1 and Appendix B, Omniglot and
mini-ImageNet): ``Att(64, 32), TC(T, 128), Att(256, 128), TC(T, 128),
Att(512, 256)``, on the conv-4 embedding.

Causality is what keeps the query's label out of sight: no position reads a
later one (tested by perturbing later inputs), and the query's label slot
is zero. Each query of a task is its own sequence (the support set plus
that query), so queries never see each other either; the embeddings are
computed once per task. On the learner contract SNAIL is an
:class:`~metajax.algorithms.embedding.EmbeddingLearner` whose "head" is the
sequence model (its parameters are meta-parameters under ``'snail'``).

References:
  Mishra, Rohaninejad, Chen & Abbeel, "A Simple Neural Attentive
  Meta-Learner", ICLR 2018, arXiv:1707.03141 (Sec. 3, 4.1, Appendix B).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.algorithms.embedding import EmbeddingLearner, mask_absent

#: the paper's few-shot blocks: ('att', key, value) or ('tc', filters).
PAPER_BLOCKS = (("att", 64, 32), ("tc", 128), ("att", 256, 128), ("tc", 128),
                ("att", 512, 256))


class CausalConv(nn.Module):
  """Kernel-2 causal convolution with ``dilation`` over ``(T, C)``:
  ``y_t = W0 x_{t - dilation} + W1 x_t + b`` (zeros before the start)."""
  features: int
  dilation: int

  @nn.compact
  def __call__(self, x):
    past = jnp.pad(x, ((self.dilation, 0), (0, 0)))[:x.shape[0]]
    return (nn.Dense(self.features, use_bias=False, name="past")(past)
            + nn.Dense(self.features, name="now")(x))


class DenseBlock(nn.Module):
  """``[x, tanh(conv_f(x)) * sigmoid(conv_g(x))]`` (gated causal conv)."""
  features: int
  dilation: int

  @nn.compact
  def __call__(self, x):
    f = CausalConv(self.features, self.dilation, name="filter")(x)
    g = CausalConv(self.features, self.dilation, name="gate")(x)
    return jnp.concatenate([x, jnp.tanh(f) * nn.sigmoid(g)], -1)


class TCBlock(nn.Module):
  """Dense blocks with dilations ``1, 2, ..., 2^(ceil(log2 T) - 1)``."""
  length: int
  features: int

  @nn.compact
  def __call__(self, x):
    for i in range(max(1, math.ceil(math.log2(self.length)))):
      x = DenseBlock(self.features, 2 ** i, name=f"dense{i}")(x)
    return x


def causal_weights(queries, keys) -> jax.Array:
  """``(T, T)`` softmax of ``q k^T / sqrt(K)`` over positions ``<= t``."""
  t = queries.shape[0]
  logits = queries @ keys.T / math.sqrt(keys.shape[-1])
  future = jnp.triu(jnp.ones((t, t), bool), k=1)
  return jax.nn.softmax(jnp.where(future, -jnp.inf, logits), -1)


class AttentionBlock(nn.Module):
  """``[x, causal_attention(x)]`` with key size ``key_size`` and value size
  ``value_size``."""
  key_size: int
  value_size: int

  @nn.compact
  def __call__(self, x):
    q = nn.Dense(self.key_size, name="query")(x)
    k = nn.Dense(self.key_size, name="key")(x)
    v = nn.Dense(self.value_size, name="value")(x)
    return jnp.concatenate([x, causal_weights(q, k) @ v], -1)


class SNAILNet(nn.Module):
  """The sequence model: ``(T, in) -> (T, ways)`` logits per position."""
  ways: int
  length: int
  blocks: Sequence[tuple] = PAPER_BLOCKS

  @nn.compact
  def __call__(self, x):
    for i, block in enumerate(self.blocks):
      if block[0] == "att":
        x = AttentionBlock(block[1], block[2], name=f"block{i}")(x)
      else:
        x = TCBlock(self.length, block[1], name=f"block{i}")(x)
    return nn.Dense(self.ways, name="out")(x)


def sequence(support_features, support_labels, query_feature, ways):
  """``(S + 1, D + ways)``: the support examples with one-hot labels, then
  the query with a zero label slot."""
  labelled = jnp.concatenate(
      [support_features, jax.nn.one_hot(support_labels, ways,
                                        dtype=support_features.dtype)], -1)
  query = jnp.concatenate([query_feature,
                           jnp.zeros((ways,), query_feature.dtype)])
  return jnp.concatenate([labelled, query[None]], 0)


@dataclasses.dataclass(frozen=True, eq=False)
class SNAIL(EmbeddingLearner):
  """SNAIL on a feature backbone (default conv-4); ``ways`` is required
  (the label slot's and the output's width).

  Attributes:
    blocks: the sequence model's blocks (:data:`PAPER_BLOCKS`).
  """
  blocks: Sequence[tuple] = PAPER_BLOCKS

  def __post_init__(self):
    super().__post_init__()
    if self.ways is None:
      raise ValueError("SNAIL needs ways (the width of its label slots and "
                       "outputs)")
    for b in self.blocks:
      if not (b and b[0] in ("att", "tc")):
        raise ValueError(f"unknown SNAIL block {b!r}; use ('att', key, "
                         "value) or ('tc', filters)")

  def net(self, support_size: int) -> SNAILNet:
    return SNAILNet(self.ways, support_size + 1, tuple(self.blocks))

  def init_head(self, rng, features):
    s = features.shape[0]
    seq = jnp.zeros((s + 1, features.shape[-1] + self.ways), features.dtype)
    return {"snail": self.net(s).init(rng, seq)["params"]}

  def fit_head(self, params, features, labels, num_classes, *,
               training=True):
    del params, num_classes, training
    return features, labels

  def head_logits(self, params, head, features):
    support, labels = head
    net = self.net(support.shape[0])
    counts = jnp.sum(jax.nn.one_hot(labels, self.ways), 0)

    def one(q):
      seq = sequence(support, labels, q, self.ways)
      return net.apply({"params": params["snail"]}, seq)[-1]

    return mask_absent(jax.vmap(one)(features), counts)
