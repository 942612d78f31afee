"""The conv-4 backbone of few-shot learning (Vinyals et al. 2016; MAML; ProtoNets).

Four blocks of [3x3 conv (``filters`` channels) -> batch norm -> ReLU ->
downsample], flattened (or averaged over space), then a linear head (or
none, for metric learners).
Downsampling is a 2x2 max-pool (ProtoNets, MAML's mini-ImageNet net) or a
stride-2 convolution (MAML's Omniglot net). Any input size works:
28x28x1 Omniglot gives 64 features, 84x84x3 mini-ImageNet with 32 filters
gives 32 * 5 * 5 = 800.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from metajax.models.layers import Conv, NormReluMaxPool, norm_layer

DOWNSAMPLE = ("maxpool", "stride")
#: initialisers of the head's kernel.
HEAD_INITS = {"lecun_normal": nn.initializers.lecun_normal(),
              "normal": nn.initializers.normal(stddev=1.0)}
#: how the last block's ``(N, h, w, filters)`` map becomes a feature vector.
FEATURES = ("flatten", "pool")
#: initialisations of the conv blocks, see :func:`block_initializers`.
INITS = ("flax", "torch_legacy")


def _uniform(bound: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def block_initializers(init: str, in_channels: int, kernel_size: int = 3):
  """``(conv kwargs, norm kwargs)`` initialising one conv block.

  * ``'flax'``: flax's defaults: LeCun-normal kernel, zero bias, batch-norm
    scale 1.
  * ``'torch_legacy'``: PyTorch's defaults before 1.0, which the 2017
    few-shot code ran with (jakesnell/prototypical-networks builds
    ``nn.Conv2d``/``nn.BatchNorm2d`` without initialising them, on a
    PyTorch whose ``loss.data[0]`` predates 0.4): kernel and bias
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with ``fan_in = k * k * Cin``, and
    batch-norm scale U(0, 1). PyTorch 1.0 changed the scale to 1
    (pytorch/pytorch#12259). The batch-norm bias starts at 0 in both.
  """
  if init == "flax":
    return {}, {}
  if init == "torch_legacy":
    bound = 1.0 / math.sqrt(kernel_size * kernel_size * in_channels)
    return ({"kernel_init": _uniform(bound), "bias_init": _uniform(bound)},
            {"scale_init": nn.initializers.uniform(scale=1.0)})
  raise ValueError(f"unknown conv_init {init!r}; choose one of {INITS}")


class Conv4(nn.Module):
  """Conv-4: ``(N, H, W, C) -> (N, num_outputs)`` (or features if ``None``).

  Attributes:
    num_outputs: classes of the linear head; ``None`` returns the flattened
      features (ProtoNets, Matching Networks).
    filters: channels per block (64 for Omniglot, 32 for mini-ImageNet).
    blocks: number of conv blocks.
    downsample: ``'maxpool'`` (2x2 max-pool after each block) or ``'stride'``
      (the block's convolution has stride 2, no pooling).
    norm: batch-norm policy, one of :data:`metajax.models.layers.NORMS`
      (see :class:`metajax.models.layers.BatchNorm`): ``'transductive'``
      (statistics of each batch it sees, per task), ``'running'`` (batch
      statistics in training, running averages in evaluation), ``'maml'``
      (cbfinn/maml's: batch statistics, offset only, epsilon 1e-3) or
      ``'none'``.
    features: ``'flatten'`` (``h * w * filters`` features, as MAML and
      ProtoNets) or ``'pool'`` (the spatial mean, ``filters`` features
      whatever the input size).
    head_init: the head kernel's initialiser, one of :data:`HEAD_INITS`:
      ``'lecun_normal'`` (flax's default) or ``'normal'`` (N(0, 1), as
      cbfinn/maml's ``tf.random_normal`` head); biases start at zero.
    conv_init: how the conv blocks are initialised, one of :data:`INITS`:
      ``'flax'`` (default) or ``'torch_legacy'`` (PyTorch < 1.0's, as the
      ProtoNets code ran); see :func:`block_initializers`. The head follows
      ``head_init``.
    pool_phases: keep a max-pool block's convolution with one input channel
      (Omniglot's first block) as the pool's phases, with batch-norm
      moments from patch statistics, never the full-size map
      (:func:`metajax.models.ops.conv2d_pool_phases`). Faster where the
      network is differentiated once (ProtoNet 5-way 5-shot step on 2 CPU
      cores: 69 -> 47 ms for the gradient); slower under exact second-order
      MAML (+19% a meta-step), where XLA recomputes the phases in every
      consumer. ``None`` (default): on for feature networks
      (``num_outputs=None``: the metric and solver learners, which
      differentiate the network once), off with a head (the MAML family).
    dtype: the computation's dtype; ``None`` (default): the input's. With
      ``jnp.bfloat16`` convolutions, pooling and the head run in bfloat16
      while the parameters stay in the input's dtype (float32): each layer
      casts its weights when applied, so gradients, inner-loop updates and
      meta-gradients are float32; batch-norm statistics are taken in
      float32 and the outputs are returned in the input's dtype.
  """
  num_outputs: int | None = 5
  filters: int = 64
  blocks: int = 4
  downsample: str = "maxpool"
  norm: str = "transductive"
  features: str = "flatten"
  head_init: str = "lecun_normal"
  conv_init: str = "flax"
  pool_phases: bool | None = None
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    if x.ndim != 4:
      raise ValueError(f"Conv4 expects (N, H, W, C) images, got shape {x.shape}")
    if self.downsample not in DOWNSAMPLE:
      raise ValueError(
          f"unknown downsample {self.downsample!r}; choose one of {DOWNSAMPLE}")
    if self.features not in FEATURES:
      raise ValueError(
          f"unknown features {self.features!r}; choose one of {FEATURES}")
    if self.head_init not in HEAD_INITS:
      raise ValueError(
          f"unknown head_init {self.head_init!r}; choose one of "
          f"{tuple(HEAD_INITS)}")
    if self.conv_init not in INITS:
      raise ValueError(
          f"unknown conv_init {self.conv_init!r}; choose one of {INITS}")
    small = min(x.shape[1:3])
    if small < 2 ** self.blocks:
      raise ValueError(
          f"{x.shape[1]}x{x.shape[2]} inputs are too small for {self.blocks} "
          f"downsampling blocks (need at least {2 ** self.blocks} pixels a side)")
    # Mixed precision: parameters in the input's dtype, compute in dtype.
    param_dtype = None if self.dtype is None else x.dtype
    x = x if self.dtype is None else x.astype(self.dtype)
    phases = (self.num_outputs is None if self.pool_phases is None
              else bool(self.pool_phases))
    for i in range(self.blocks):
      conv_init, norm_init = block_initializers(self.conv_init, x.shape[-1])
      if self.downsample == "maxpool":
        # Norm and ReLU after the pool: same values, 4x smaller tensors.
        y, b = Conv(self.filters, 3, param_dtype=param_dtype, name=f"conv{i}",
                    **conv_init)(
            x, split_bias=True, pool_window=2 if phases else None)
        x = NormReluMaxPool(self.norm, 2, param_dtype=param_dtype,
                            name=f"norm{i}", **norm_init)(y, b)
      else:
        x = Conv(self.filters, 3, strides=2, param_dtype=param_dtype,
                 name=f"conv{i}", **conv_init)(x)
        x = nn.relu(norm_layer(self.norm, name=f"norm{i}",
                               param_dtype=param_dtype, **norm_init)(x))
    x = (x.reshape(x.shape[0], -1) if self.features == "flatten"
         else x.mean(axis=(1, 2)))
    if self.num_outputs is not None:
      mixed = {} if self.dtype is None else {"dtype": self.dtype,
                                             "param_dtype": param_dtype}
      x = nn.Dense(self.num_outputs, kernel_init=HEAD_INITS[self.head_init],
                   name="head", **mixed)(x)
    return x if param_dtype is None else x.astype(param_dtype)
