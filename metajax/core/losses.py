"""Per-task losses and metrics: ``(predictions, targets) -> scalar``.

Each loss is a mean over the examples of one task, so the meta-objective is a
plain mean over tasks of these.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def mse(pred: jax.Array, y: jax.Array) -> jax.Array:
  """Mean squared error; ``pred`` and ``y`` of shape ``(N, ...)``."""
  return jnp.mean(jnp.square(pred - y))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy; ``logits`` ``(N, C)``, integer ``labels`` ``(N,)``."""
  return jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of ``argmax(logits) == labels``."""
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def get(name):
  """A loss by name (``'mse'`` or ``'cross_entropy'``) or the callable itself."""
  if callable(name):
    return name
  table = {"mse": mse, "cross_entropy": cross_entropy}
  if name not in table:
    raise ValueError(f"unknown loss {name!r}; choose one of {sorted(table)}")
  return table[name]
