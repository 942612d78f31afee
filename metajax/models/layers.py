"""Flax layers used functionally (through ``apply``) by the model zoo."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from metajax.models import ops

class Conv(nn.Module):
  """3x3-style 2-D convolution, NHWC, on :func:`metajax.models.ops.conv2d`
  (custom gradients of any order, at any stride).

  Attributes:
    features: output channels.
    kernel_size: square kernel side.
    strides: 1, or e.g. 2 for MAML's strided Omniglot net (``'SAME'`` then
      gives ``ceil(H / strides)`` outputs a side, as lax and TensorFlow).
    padding: ``'SAME'`` or ``'VALID'``.
    use_bias: add a bias (redundant before batch norm, kept for parity with
      the PyTorch reference).
    dtype: the computation's dtype (e.g. ``jnp.bfloat16``); ``None``: the
      input's. Kernel and bias are cast to it when applied, so their
      gradients come back in their own dtype.
    param_dtype: the parameters' dtype; ``None``: the input's.
    kernel_init, bias_init: initialisers of the kernel (``(k, k, Cin,
      features)``) and the bias.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  padding: str = "SAME"
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  dtype: Any = None
  param_dtype: Any = None

  @nn.compact
  def __call__(self, x, *, split_bias: bool = False,
               pool_window: int | None = None):
    """``(N, H, W, Cin) -> (N, H', W', features)``.

    With ``split_bias=True`` returns ``(y, bias)`` with the bias not yet added
    (``bias`` is ``None`` without ``use_bias``), for a following
    :class:`NormReluMaxPool` that adds it to the 4x smaller pooled tensor.
    With ``pool_window=k`` as well (the max-pool that block applies), ``y``
    may instead be a :class:`metajax.models.ops.PooledConv`: the output's
    ``k x k`` pooling phases and its moments, never the full map
    (:func:`metajax.models.ops.conv2d_pool_phases`; stride 1, at most
    :data:`~metajax.models.ops.POOL_PHASES_MAX_CIN` input channels, the
    custom convolution rules).
    """
    k = self.kernel_size
    param_dtype = self.param_dtype or x.dtype
    dtype = self.dtype or x.dtype
    w = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features),
                   param_dtype)
    if (pool_window and split_bias and self.strides == 1
        and x.shape[-1] <= ops.POOL_PHASES_MAX_CIN and ops.IMPL == "custom"):
      y = ops.conv2d_pool_phases(x.astype(dtype), w.astype(dtype), self.padding,
                                 pool_window,
                                 moments_dtype=jnp.promote_types(dtype, param_dtype))
    else:
      y = ops.conv2d(x.astype(dtype), w.astype(dtype), self.padding, self.strides)
    bias = (self.param("bias", self.bias_init, (self.features,),
                       param_dtype).astype(dtype)
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


#: batch-norm policies (see :class:`BatchNorm`).
NORMS = ("transductive", "running", "maml", "none")
#: the collection holding running statistics under ``norm='running'``.
BATCH_STATS = "batch_stats"
#: epsilon of the ``'maml'`` policy (``tf.contrib.layers.batch_norm``'s default).
MAML_EPSILON = 1e-3


def _check_norm(norm: str) -> None:
  if norm not in NORMS:
    raise ValueError(f"unknown norm policy {norm!r}; choose one of {NORMS}")


def _normalisation(module: nn.Module, y, norm: str, epsilon: float,
                   shift=None, param_dtype=None, moments=None,
                   scale_init=nn.initializers.ones):
  """``(mean, scale / std, bias, scale)`` of policy ``norm`` for ``y + shift``.

  ``moments``: ``(mean, biased variance, count)`` of ``y`` when the caller
  has them without ``y`` (then ``y`` is any array of ``y``'s dtype and
  channels, e.g. one pooling phase); ``None``: taken from ``y``.

  ``shift`` (a per-channel conv bias not yet added to ``y``, or ``None``)
  enters the mean only: the variance of ``y + shift`` is that of ``y``.
  Parameters, running statistics and the returned quantities are in
  ``param_dtype`` (``None``: ``y``'s); with a lower-precision ``y`` (bfloat16
  compute) the moments are taken in ``param_dtype``.

  Called inside ``module``'s compact ``__call__``, so parameters and running
  statistics are the module's own. Under ``'running'``:

  * ``batch_stats`` given and not mutable (evaluation): the stored running
    mean and variance, without gradient, so each example is normalised on
    its own and the output does not depend on the rest of the batch;
  * otherwise (training): the batch's statistics; when ``batch_stats`` is
    mutable the batch's mean and *unbiased* variance are written to it (the
    quantities PyTorch's running averages average), for the caller to fold
    into its running averages (``Learner.update_model_state``).
  """
  c = y.shape[-1]
  param_dtype = param_dtype or y.dtype
  y = y.astype(jnp.promote_types(y.dtype, param_dtype))
  bias = module.param("bias", nn.initializers.zeros, (c,), param_dtype)
  if norm == "maml":
    scale, epsilon = None, MAML_EPSILON
  else:
    scale = module.param("scale", scale_init, (c,), param_dtype)
  evaluating = (norm == "running"
                and module.has_variable(BATCH_STATS, "mean")
                and not module.is_mutable_collection(BATCH_STATS))
  if evaluating:
    mean = lax.stop_gradient(module.get_variable(BATCH_STATS, "mean"))
    var = lax.stop_gradient(module.get_variable(BATCH_STATS, "var"))
  else:
    if moments is None:
      mean, var = _moments(y)
      count = y.size // c
    else:
      mean, var, count = moments
      mean, var = mean.astype(y.dtype), var.astype(y.dtype)
    if shift is not None:
      mean = mean + shift
    if norm == "running" and module.is_mutable_collection(BATCH_STATS):
      unbiased = var * (count / max(count - 1, 1))
      module.put_variable(BATCH_STATS, "mean", lax.stop_gradient(mean))
      module.put_variable(BATCH_STATS, "var", lax.stop_gradient(unbiased))
  inv = lax.rsqrt(var + epsilon)
  return mean, (inv if scale is None else scale * inv), bias, scale


class BatchNorm(nn.Module):
  """Batch norm under one of the policies :data:`NORMS`.

  * ``'transductive'`` (MAML's and most meta-learning code's): every call
    normalises with the mean and biased variance of its own input over all
    axes but the last. Applied per task under ``vmap``/``lax.map`` and
    separately to the support and query sets, statistics never mix across
    tasks or sets. Parameters: ``scale`` and ``bias``.
  * ``'running'`` (standard train/eval, as PyTorch's ``train()``/``eval()``
    in the ProtoNets code): batch statistics in training, stored running
    averages (collection :data:`BATCH_STATS`) in evaluation; see
    :func:`_normalisation` and ``metajax.Learner.update_model_state``.
  * ``'maml'`` (cbfinn/maml's ``tf.contrib.layers.batch_norm`` with its
    defaults): batch statistics always, ``epsilon`` 1e-3, an offset
    ``bias`` and no scale. That code keeps these variables out of the fast
    weights; with metajax's learners, pass
    :func:`metajax.core.masks.exclude_norm` as the adapt mask.
  * ``'none'``: identity.

  ``param_dtype`` (``None``: the input's) holds the parameters and the
  statistics; the output keeps the input's dtype. ``scale_init``
  initialises ``scale`` (ones; PyTorch before 1.0 drew it from U(0, 1)).
  """
  norm: str = "transductive"
  epsilon: float = 1e-5
  param_dtype: Any = None
  scale_init: Any = nn.initializers.ones

  @nn.compact
  def __call__(self, x):
    _check_norm(self.norm)
    if self.norm == "none":
      return x
    mean, mult, bias, _ = _normalisation(self, x, self.norm, self.epsilon,
                                         param_dtype=self.param_dtype,
                                         scale_init=self.scale_init)
    return ((x - mean) * mult + bias).astype(x.dtype)


class TransductiveBatchNorm(BatchNorm):
  """:class:`BatchNorm` with ``norm='transductive'`` (MAML's policy)."""
  norm: str = "transductive"


def initial_running_stats(stats):
  """Running statistics at initialisation: mean 0, variance 1 (PyTorch's),
  shaped like ``stats`` (a ``batch_stats`` collection)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, a: (jnp.ones_like(a) if getattr(path[-1], "key", None) == "var"
                       else jnp.zeros_like(a)), stats)


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
    param_dtype: dtype of the parameters and statistics (``None``: ``y``'s);
      the output keeps ``y``'s dtype.
    scale_init: initialiser of ``scale`` (as :class:`BatchNorm`).
  """
  norm: str = "transductive"
  window: int = 2
  epsilon: float = 1e-5
  param_dtype: Any = None
  scale_init: Any = nn.initializers.ones

  @nn.compact
  def __call__(self, y, conv_bias=None):
    """``(N, H, W, C)`` conv outputs (without their bias), or their
    :class:`metajax.models.ops.PooledConv` (``Conv(..., pool_window=k)``),
    ``-> (N, H // window, W // window, C)``."""
    _check_norm(self.norm)
    if isinstance(y, ops.PooledConv):
      if y.window != self.window:
        raise ValueError(f"NormReluMaxPool(window={self.window}) got the phases "
                         f"of a {y.window}x{y.window} pool")
      phases, moments = y.phases, (y.mean, y.var, y.count)
      pool = lambda s: ops.max_of([s * p for p in phases])  # noqa: E731
      y = phases[0]
    else:
      moments = None
      pool = lambda s: ops.max_pool(s * y, self.window)  # noqa: E731
    if self.norm == "none":
      p = pool(1)
      return nn.relu(p if conv_bias is None else p + conv_bias)
    mean, mult, bias, scale = _normalisation(self, y, self.norm, self.epsilon,
                                             shift=conv_bias,
                                             param_dtype=self.param_dtype,
                                             moments=moments,
                                             scale_init=self.scale_init)
    if scale is None:
      m = pool(1)
    else:
      sign = lax.stop_gradient(jnp.where(scale >= 0, 1, -1).astype(y.dtype))
      m = sign * pool(sign)
    if conv_bias is not None:
      # With batch statistics the conv bias cancels; entering through the
      # pooled values and the mean, it gets its (analytically zero)
      # gradient. Running means are stored with the bias included, as in
      # the unfused order, so in evaluation it cancels only approximately.
      m = m + conv_bias
    return nn.relu((m - mean) * mult + bias).astype(y.dtype)


def norm_layer(norm: str, name: str | None = None, param_dtype=None,
               scale_init=nn.initializers.ones):
  """The normalisation layer for a policy name (:data:`NORMS`)."""
  _check_norm(norm)
  if norm == "none":
    return lambda x: x
  return BatchNorm(norm, name=name, param_dtype=param_dtype,
                   scale_init=scale_init)
