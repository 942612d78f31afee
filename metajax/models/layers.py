"""Flax layers used functionally (through ``apply``) by the model zoo."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from metajax.models import ops

NORMS = ("transductive", "none")


class Conv(nn.Module):
  """3x3-style 2-D convolution, NHWC, with the fast-backward op at stride 1.

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    strides: 1, or e.g. 2 for MAML's strided Omniglot net (stride > 1 uses
      ``lax.conv_general_dilated`` and XLA's own gradient).
    padding: ``'SAME'`` or ``'VALID'``.
    use_bias: add a bias (redundant before batch norm, kept for parity with
      the PyTorch reference).
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: str = "SAME"
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    w = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                   x.dtype)
    if self.strides == 1:
      y = ops.conv2d(x, w, self.padding)
    else:
      y = lax.conv_general_dilated(
          x, w, (self.strides, self.strides), self.padding,
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), x.dtype)
    return y


class TransductiveBatchNorm(nn.Module):
  """Batch norm over the batch it is given, with no running statistics.

  This is MAML's batch-norm policy: every call normalises with the mean and
  (biased) variance of its own input over all axes but the last. Applied per
  task under ``vmap``/``lax.map`` and separately to the support and query
  sets, statistics never mix across tasks or sets. Only the scale and shift
  are parameters (and adapt in the inner loop like any other).
  """
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), x.dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,), x.dtype)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.mean(jnp.square(x - mean), axes)
    return (x - mean) * (scale * lax.rsqrt(var + self.epsilon)) + bias


def norm_layer(norm: str, name: str | None = None):
  """The normalisation layer for a policy name (``NORMS``)."""
  if norm == "transductive":
    return TransductiveBatchNorm(name=name)
  if norm == "none":
    return lambda x: x
  raise ValueError(f"unknown norm policy {norm!r}; choose one of {NORMS}")
