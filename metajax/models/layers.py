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
  def __call__(self, x, *, split_bias: bool = False):
    """``(N, H, W, Cin) -> (N, H', W', features)``.

    With ``split_bias=True`` returns ``(y, bias)`` with the bias not yet added
    (``bias`` is ``None`` without ``use_bias``), for a following
    :class:`NormReluMaxPool` that adds it to the 4x smaller pooled tensor.
    """
    k = self.kernel_size
    w = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                   x.dtype)
    if self.strides == 1:
      y = ops.conv2d(x, w, self.padding)
    else:
      y = lax.conv_general_dilated(
          x, w, (self.strides, self.strides), self.padding,
          dimension_numbers=("NHWC", "HWIO", "NHWC"))
    bias = (self.param("bias", nn.initializers.zeros, (self.features,), x.dtype)
            if self.use_bias else None)
    if split_bias:
      return y, bias
    return y if bias is None else y + bias


@jax.custom_jvp
def _moments(x):
  """Per-channel mean and biased variance over all axes but the last."""
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  return mean, jnp.mean(jnp.square(x - mean), axes)


@_moments.defjvp
def _moments_jvp(primals, tangents):
  # Autodiff's own rule keeps x - mean, a full-size copy, for the backward
  # pass; this form needs only x, which the callers keep anyway. It loses
  # precision only when |mean| >> std (relative error ~ eps * |mean| / std).
  x, = primals
  dx, = tangents
  axes = tuple(range(x.ndim - 1))
  mean, var = _moments(x)
  dmean = jnp.mean(dx, axes)
  return (mean, var), (dmean, 2 * (jnp.mean(x * dx, axes) - mean * dmean))


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
    mean, var = _moments(x)
    return (x - mean) * (scale * lax.rsqrt(var + self.epsilon)) + bias


class NormReluMaxPool(nn.Module):
  """``max_pool(relu(norm(y + conv_bias)))``, computed on the pooled tensor.

  Same values and parameters (``scale``, ``bias``) as
  :class:`TransductiveBatchNorm`, then ReLU, then :func:`ops.max_pool`. Per
  channel, batch norm is an affine map, increasing when its scale is >= 0 and
  decreasing when it is < 0, and ReLU is non-decreasing; both therefore commute
  with the window maximum (of ``y``, or of ``-y`` for a negative scale).
  Rounding is monotone too, so the same element wins each window and the
  outputs agree to rounding error.
  The full-size conv output is then read only for the batch statistics and
  the pool, and its gradient is one fused pass instead of the batch-norm
  backward's several, on the largest tensor of conv-4 (75 x 28 x 28 x 64 for
  a 5-way 15-query set). On 2 CPU cores that saved 1-12% of a conv-4 query
  gradient (``benchmarks/README.md``).
  The derivative routes each window to the same element as the unfused
  composition does, except for windows where different inputs round to equal
  normalised values (then to the largest input rather than the first).

  Attributes:
    norm: ``'transductive'`` (batch statistics of ``y``, no running
      averages) or ``'none'``.
    window: max-pool window and stride.
    epsilon: added to the variance.
  """
  norm: str = "transductive"
  window: int = 2
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, y, conv_bias=None):
    """``(N, H, W, C)`` conv outputs (without their bias) ``->
    (N, H // window, W // window, C)``."""
    if self.norm == "none":
      p = ops.max_pool(y, self.window)
      return nn.relu(p if conv_bias is None else p + conv_bias)
    if self.norm != "transductive":
      raise ValueError(f"unknown norm policy {self.norm!r}; choose one of {NORMS}")
    c = y.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), y.dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,), y.dtype)
    mean, var = _moments(y)
    sign = lax.stop_gradient(jnp.where(scale >= 0, 1, -1).astype(y.dtype))
    m = sign * ops.max_pool(sign * y, self.window)
    if conv_bias is not None:
      # The conv bias cancels in batch norm; entering through the pooled
      # values and the mean, it gets its (analytically zero) gradient.
      m, mean = m + conv_bias, mean + conv_bias
    return nn.relu((m - mean) * (scale * lax.rsqrt(var + self.epsilon)) + bias)


def norm_layer(norm: str, name: str | None = None):
  """The normalisation layer for a policy name (``NORMS``)."""
  if norm == "transductive":
    return TransductiveBatchNorm(name=name)
  if norm == "none":
    return lambda x: x
  raise ValueError(f"unknown norm policy {norm!r}; choose one of {NORMS}")
