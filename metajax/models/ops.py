"""Array ops for the model zoo, written for speed under nested autodiff on CPU.

``conv2d``: an NHWC/HWIO convolution, stride 1 or more. Its forward pass,
its input gradient and its kernel gradient are three bilinear maps, each with
a custom VJP written in terms of the other two, so gradients of any order
stay on the fast paths below (MAML's meta-gradient differentiates the
backward pass). For ``y = conv(x, w)`` with cotangent ``dy``:

    dx = conv_input_grad(dy, w)      (full correlation with the flipped kernel;
                                      at stride s, of dy dilated by s)
    dw = conv_kernel_grad(x, dy)     (correlation of x with dy, summed over N;
                                      at stride s, with dy dilated by s)

and, for cotangents ``c`` of those two maps,
``vjp(conv_input_grad) = (conv(c, w), conv_kernel_grad(c, dy))`` and
``vjp(conv_kernel_grad) = (conv_input_grad(dy, c), conv(x, c))``.
Why not XLA's own transpose rules: they produce convolutions with permuted
dimension numbers that XLA:CPU runs many times slower (measured 10-60x for
the kernel gradient, worst inside loops). Implementations (measured on a
2-core AVX-512 CPU, conv-4 MAML shapes):

* kernel gradient with one input channel (:data:`KERNEL_GRAD_SMALL_CIN`):
  one ``dot_general`` of the ``kh * kw`` shifted copies with ``dy`` (4x
  faster), unchunked;
* forward pass with up to 3 input channels (:data:`SMALL_CIN`): a sum of
  ``kh * kw * Cin``
  broadcast products, one elementwise fusion (0.5-0.9 ms against 2.7-3.1 ms
  for ``lax.conv_general_dilated`` on 75 x 28 x 28 x 1 -> 64; see
  ``benchmarks/README.md``);
* kernel gradient otherwise: a convolution with the batch as the contracted
  feature axis, split into batch chunks of at most ``KERNEL_GRAD_POSITIONS``
  output positions (large single calls fell off cache: 5x slower at
  300 x 14 x 14 x 64 under YNN; XLA's own kernels, which
  :mod:`metajax.xla_cpu` selects, are less sensitive);
* forward pass otherwise, and input gradient: ``lax.conv_general_dilated``.

At stride ``s > 1`` (MAML's Omniglot net) the same three maps and rules run
with the stride as a static argument; ``conv2d`` first cuts input rows and
columns that no strided window reaches, so each map is exactly the transpose
of the others. Implementations (2-core AMD EPYC, float32, 64 channels):

* forward pass: ``lax.conv_general_dilated`` with window strides (3.9 ms at
  75 x 14 x 14 x 64 -> 7 x 7); with few input channels the broadcast
  products of strided windows (0.26 ms against 1.5 ms for lax on
  75 x 28 x 28 x 1 -> 14 x 14);
* input gradient: a convolution of ``dy`` dilated by ``s``
  (``lhs_dilation``), split into batch chunks of at most
  ``INPUT_GRAD_POSITIONS`` positions of ``dy`` (300 x 7 x 7 x 64 -> 14 x 14:
  37 -> 22 ms). When ``dy`` is smaller than the kernel (conv-4's last block,
  2 x 2), XLA would swap the convolution's operands into the slow layout
  above; there it is ``s * s`` stride-1 input gradients with the kernel's
  phases ``w[p::s, q::s]``, interleaved (75 x 2 x 2 x 64 -> 4 x 4: 2.2 ->
  0.8 ms). Those phases everywhere were 10-40% slower at 7 x 7 and 14 x 14;
  zero-insertion followed by the stride-1 input gradient, 4x slower (4x the
  multiply-adds);
* kernel gradient: the stride-1 forms with strided windows: shifted copies
  for few input channels (2.8 ms against 5.9 ms for a convolution at
  300 x 28 x 28 x 1), otherwise the batch-contracted convolution with ``dy``
  dilated by ``s`` as the kernel (``rhs_dilation``), chunked as at stride 1
  (chunk size made no measurable difference here).
* Rejected: space-to-depth (stride-1 maps on ``s * s * Cin`` channels and a
  zero-padded ``ceil(k / s)`` kernel, all on the stride-1 rules): 1.8x the
  multiply-adds, forward 6.9 ms and kernel gradient 11.9 ms against 3.9 and
  5.9 ms at 75 x 14 x 14 x 64.

Whole conv-4 MAML meta-steps (second order, one inner step, 28 x 28 x 1,
15 queries a class; ``benchmarks/conv_stride.py``): 5-way 1-shot, meta-batch
4, 70 ms against 1081 ms for the strided net on lax convolutions (and 211 ms
for the max-pool net); 20-way 1-shot, meta-batch 2, 169 ms against 3559 ms
(max-pool: 494 ms). XLA's own second-order rules for strided convolutions
give kernel gradients with permuted dimension numbers (``f01b_i01o->01bf``)
and unmaterialised kernel transposes.

``conv2d`` supports reverse-mode autodiff of any order (``jax.grad``,
``jax.vjp``, nested); forward mode (``jax.jvp``, ``jax.jacfwd``) is not
available through ``custom_vjp``.

``conv2d_pool_phases`` (conv-4's first block on Omniglot, one input
channel, followed by batch norm and a max-pool): the convolution kept as the
pool's ``k * k`` phases (stride-``k`` convolutions on the rules above) and its
batch-norm moments computed from the input patches' mean and covariance
(``conv2d_moments``), so the full-size output (100 x 28 x 28 x 64 for a
5-way 5-shot episode) is never written, normalised or differentiated;
``max_of`` takes the maximum over the phases. The ProtoNet 5-way 5-shot
parameter gradient went from 69 to 47 ms on 2 cores (130 -> 96 ms on one).
Under exact second-order MAML the same block made meta-steps 19% slower:
XLA:CPU recomputes the phases' broadcast products inside every consumer
fusion (``lax.optimization_barrier`` is removed before fusion on CPU, and a
matrix-product form of the phases, which would be materialised, was slower
still), so :class:`~metajax.models.Conv4` uses it by default only for
feature networks (``pool_phases``).

``max_pool``: non-overlapping max-pool with a ``custom_jvp``: the maximum and
the position of the first maximum in each window (row-major, PyTorch's
tie-break) come from the same pass of selects over window positions, and the tangent is the input
tangent at that position. The backward pass is then an elementwise select.
Masks of the form ``x == max`` (``jnp.max``'s own derivative, or a mask
recomputed in the backward pass) gave wrong gradients in jitted conv-4 nets
on XLA:CPU (jaxlib 0.10): the fused recomputation need not reproduce the
forward values bit for bit, so windows lost their gradient. An index taken in
the same reduction as the maximum cannot disagree with it.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from metajax.core.remat import CONV_NAME

_DN = ("NHWC", "HWIO", "NHWC")
#: up to this many input channels, the forward pass is a sum of broadcast
#: products instead of a convolution (80 x 84 x 84 x 3 -> 32: 31 against
#: 46 ms).
SMALL_CIN = 3
#: up to this many input channels, the kernel gradient uses shifted copies
#: instead of a convolution (at 100 x 28 x 28 x 1 -> 64, 4x faster; at
#: 80 x 84 x 84 x 3 -> 32 the convolution is faster, 42-52 against 72-87 ms).
KERNEL_GRAD_SMALL_CIN = 1
#: kernel-gradient convolutions are split into batch chunks with at most this
#: many output positions (N * H' * W') each; ``0`` disables chunking. 5000
#: was right under YNN; with XLA's own kernels (:mod:`metajax.xla_cpu`) small
#: chunks cost up to 1.5x at 84 x 84 (80 x 42 x 42 x 32: 60-71 ms at 5000,
#: 41-42 ms at 20000) and made no measurable difference at 28 x 28.
KERNEL_GRAD_POSITIONS = 20000
#: strided input gradients are split likewise, by ``N * H' * W'`` of the
#: cotangent (stride 1 is not split).
INPUT_GRAD_POSITIONS = 5000


# ---------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------
def _pads(padding, kernel_hw, strides=(1, 1), in_hw=None):
  """``((top, bottom), (left, right))`` for a padding spec (``ValueError`` if bad).

  ``'SAME'`` at stride ``s`` pads to ``ceil(H / s)`` outputs, the extra row
  or column (if any) at the bottom or right, as ``lax.padtype_to_pads``.
  """
  if isinstance(padding, str):
    if padding == "SAME":
      if tuple(strides) != (1, 1):
        return tuple(lax.padtype_to_pads(in_hw, kernel_hw, strides, "SAME"))
      return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_hw)
    if padding == "VALID":
      return ((0, 0), (0, 0))
    raise ValueError(
        f"padding must be 'SAME', 'VALID' or ((top, bottom), (left, right)), "
        f"got {padding!r}")
  try:
    pads = tuple((int(a), int(b)) for a, b in padding)
  except (TypeError, ValueError):
    raise ValueError(
        "padding must be 'SAME', 'VALID' or ((top, bottom), (left, right)), "
        f"got {padding!r}") from None
  if len(pads) != 2 or any(p < 0 for pair in pads for p in pair):
    raise ValueError(
        f"explicit padding must be two non-negative (low, high) pairs, got "
        f"{padding!r}")
  return pads


def _materialize(a):
  """``a`` as an explicit copy: without the barrier XLA folds the transpose
  into the convolution's dimension numbers, the slow layout this module
  avoids."""
  return lax.optimization_barrier(a)


def _pad_hw(x, pads):
  (pt, pb), (pl, pr) = pads
  if pt == pb == pl == pr == 0:
    return x
  return jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))


def _shifted(xp, kh, kw, ho, wo, strides=(1, 1)):
  """The ``kh * kw`` windows ``xp[:, a:a+ho, b:b+wo]`` (at stride ``(sh, sw)``:
  ``xp[:, a:a+sh*(ho-1)+1:sh, b:b+sw*(wo-1)+1:sw]``), row-major in (a, b)."""
  if tuple(strides) == (1, 1):
    return [xp[:, a:a + ho, b:b + wo, :] for a in range(kh) for b in range(kw)]
  sh, sw = strides
  return [xp[:, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw, :]
          for a in range(kh) for b in range(kw)]


def _forward(x, w, pads, strides=(1, 1)):
  cin = x.shape[-1]
  if cin > SMALL_CIN:
    return lax.conv_general_dilated(x, w, tuple(strides), pads,
                                    dimension_numbers=_DN)
  kh, kw = w.shape[:2]
  sh, sw = strides
  ho = (x.shape[1] + sum(pads[0]) - kh) // sh + 1
  wo = (x.shape[2] + sum(pads[1]) - kw) // sw + 1
  out = None
  for i, v in enumerate(_shifted(_pad_hw(x, pads), kh, kw, ho, wo, strides)):
    for c in range(cin):
      t = v[..., c:c + 1] * w[i // kw, i % kw, c]
      out = t if out is None else out + t
  return out


def _input_grad_conv(dy, w, pads, strides):
  kh, kw = w.shape[:2]
  (pt, pb), (pl, pr) = pads
  # Full correlation with the spatially flipped, in/out-swapped kernel; a
  # padding larger than kernel - 1 becomes a negative (cropping) padding. At
  # stride s, dy is dilated by s (s - 1 zeros between entries); the padding
  # is exact because ``conv2d`` cuts rows the strided windows never reach.
  w_t = _materialize(jnp.swapaxes(w[::-1, ::-1], 2, 3))
  return lax.conv_general_dilated(
      dy, w_t, (1, 1), ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr)),
      lhs_dilation=tuple(strides), dimension_numbers=_DN)


def _input_grad_phases(dy, w, pads, strides):
  """Strided input gradient as ``sh * sw`` stride-1 ones: the rows
  ``p, p + sh, ...`` of the padded input get the full correlation of ``dy``
  with the kernel rows ``p, p + sh, ...`` (likewise columns); interleaved
  and cropped to the unpadded input."""
  sh, sw = strides
  kh, kw = w.shape[:2]
  (pt, pb), (pl, pr) = pads
  n, ho, wo, _ = dy.shape
  c = w.shape[2]
  hq, wq = ho + -(-kh // sh) - 1, wo + -(-kw // sw) - 1
  phases = []
  for p in range(sh):
    for q in range(sw):
      sub = w[p::sh, q::sw]
      if sub.size:
        g = _input_grad_conv(dy, sub, ((0, 0), (0, 0)), (1, 1))
        g = _pad_hw(g, ((0, hq - g.shape[1]), (0, wq - g.shape[2])))
      else:  # kernel smaller than the stride: rows no window reaches
        g = jnp.zeros((n, hq, wq, c), dy.dtype)
      phases.append(g)
  g = (jnp.stack(phases, 3).reshape(n, hq, wq, sh, sw, c)
       .transpose(0, 1, 3, 2, 4, 5).reshape(n, hq * sh, wq * sw, c))
  h = sh * (ho - 1) + kh - pt - pb
  w_ = sw * (wo - 1) + kw - pl - pr
  return g[:, pt:pt + h, pl:pl + w_]


def _input_grad(dy, w, pads, strides=(1, 1)):
  if tuple(strides) == (1, 1):
    return _input_grad_conv(dy, w, pads, strides)
  kh, kw = w.shape[:2]
  if dy.shape[1] * dy.shape[2] < kh * kw:
    # XLA would swap the operands of a convolution whose (undilated) input
    # is smaller than its kernel, into the slow layout of this module's
    # docstring (2.2 -> 0.8 ms at 75 x 2 x 2 x 64 -> 4 x 4).
    return _input_grad_phases(dy, w, pads, strides)
  n = dy.shape[0]
  positions = dy.shape[1] * dy.shape[2]
  if not INPUT_GRAD_POSITIONS or n * positions <= INPUT_GRAD_POSITIONS:
    return _input_grad_conv(dy, w, pads, strides)
  chunks = -(-n * positions // INPUT_GRAD_POSITIONS)
  per = -(-n // chunks)
  return jnp.concatenate([_input_grad_conv(dy[i:i + per], w, pads, strides)
                          for i in range(0, n, per)], axis=0)


def _kernel_grad_chunk(x, dy, pads, kernel_hw, strides=(1, 1)):
  kh, kw = kernel_hw
  cin = x.shape[-1]
  if cin <= KERNEL_GRAD_SMALL_CIN:
    xp = _pad_hw(x, pads)
    patches = jnp.concatenate(
        _shifted(xp, kh, kw, dy.shape[1], dy.shape[2], strides), axis=-1)
    g = lax.dot_general(patches, dy, (((0, 1, 2), (0, 1, 2)), ((), ())))
    return g.reshape(kh, kw, cin, dy.shape[-1])
  # Channels of x play the batch, images the contracted features, dy the
  # (large) kernel: out[a, b, c, o] = sum_n,i,j xpad[n, i+a, j+b, c] dy[n, i, j, o],
  # written as a canonical NHWC/HWIO convolution of explicit transposes (at
  # stride s: i + a becomes s * i + a, the "kernel" dy dilated by s).
  xt = _materialize(jnp.transpose(x, (3, 1, 2, 0)))      # (Cin, H, W, N)
  dyt = _materialize(jnp.transpose(dy, (1, 2, 0, 3)))    # (H', W', N, Cout)
  g = lax.conv_general_dilated(xt, dyt, (1, 1), pads,
                               rhs_dilation=tuple(strides), dimension_numbers=_DN)
  return jnp.transpose(g, (1, 2, 0, 3))                  # (kh, kw, Cin, Cout)


def _kernel_grad(x, dy, pads, kernel_hw, strides=(1, 1)):
  n = x.shape[0]
  positions = dy.shape[1] * dy.shape[2]
  if (x.shape[-1] <= KERNEL_GRAD_SMALL_CIN or not KERNEL_GRAD_POSITIONS
      or n * positions <= KERNEL_GRAD_POSITIONS):
    return _kernel_grad_chunk(x, dy, pads, kernel_hw, strides)
  chunks = -(-n * positions // KERNEL_GRAD_POSITIONS)
  per = -(-n // chunks)
  out = None
  for i in range(0, n, per):
    g = _kernel_grad_chunk(x[i:i + per], dy[i:i + per], pads, kernel_hw, strides)
    out = g if out is None else out + g
  return out


# ``pads`` and ``strides`` are static and exact: ``H + top + bottom - kh`` is
# a multiple of the stride (``conv2d`` cuts the rest), so each map's output
# shape follows from its inputs and the three are each other's transposes.
@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, pads, strides):
  return _forward(x, w, pads, strides)


# The fwd rules call the custom functions themselves, not their bodies: at
# second order JAX differentiates the fwd rule, which must then stay on these
# custom rules instead of lax's transpose of a raw convolution.
def _conv_fwd(x, w, pads, strides):
  return _conv(x, w, pads, strides), (x, w)


def _conv_bwd(pads, strides, res, dy):
  x, w = res
  return (_conv_t(dy, w, pads, strides),
          _conv_k(x, dy, pads, w.shape[:2], strides))


_conv.defvjp(_conv_fwd, _conv_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_t(dy, w, pads, strides):
  """Input gradient of ``_conv`` (the transpose of ``x -> conv(x, w)``)."""
  return _input_grad(dy, w, pads, strides)


def _conv_t_fwd(dy, w, pads, strides):
  return _conv_t(dy, w, pads, strides), (dy, w)


def _conv_t_bwd(pads, strides, res, c):
  dy, w = res
  return (_conv(c, w, pads, strides),
          _conv_k(c, dy, pads, w.shape[:2], strides))


_conv_t.defvjp(_conv_t_fwd, _conv_t_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv_k(x, dy, pads, kernel_hw, strides):
  """Kernel gradient of ``_conv`` (the transpose of ``w -> conv(x, w)``)."""
  return _kernel_grad(x, dy, pads, kernel_hw, strides)


def _conv_k_fwd(x, dy, pads, kernel_hw, strides):
  return _conv_k(x, dy, pads, kernel_hw, strides), (x, dy)


def _conv_k_bwd(pads, kernel_hw, strides, res, c):
  x, dy = res
  return _conv_t(dy, c, pads, strides), _conv(x, c, pads, strides)


_conv_k.defvjp(_conv_k_fwd, _conv_k_bwd)


#: implementation of :func:`conv2d` when its ``impl`` is ``None``: ``'custom'``
#: (the rules above) or ``'lax'`` (``lax.conv_general_dilated`` and XLA's own
#: gradients; a reference for tests and benchmarks).
IMPL = "custom"
IMPLS = ("custom", "lax")


def _strides(strides):
  """``(sh, sw)`` for an int or a pair (``ValueError`` if not positive)."""
  try:
    st = ((int(strides),) * 2 if isinstance(strides, (int, np.integer))
          else tuple(int(s) for s in strides))
  except (TypeError, ValueError):
    st = ()
  if len(st) != 2 or min(st) < 1:
    raise ValueError(f"strides must be a positive int or (sh, sw), got {strides!r}")
  return st


def conv2d(x: jax.Array, w: jax.Array, padding="SAME", strides=1,
           impl: str | None = None) -> jax.Array:
  """2-D convolution (cross-correlation, as in every DL framework).

  ``y[n, i, j, o] = sum_{a, b, c} xpad[n, sh*i + a, sw*j + b, c] * w[a, b, c, o]``
  with ``xpad`` the zero-padded input. Same values as
  ``lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=
  ('NHWC', 'HWIO', 'NHWC'))``; faster gradients of any order on CPU (see the
  module docstring). Reverse-mode autodiff only.

  Args:
    x: ``(N, H, W, Cin)`` inputs.
    w: ``(kh, kw, Cin, Cout)`` kernel.
    padding: ``'SAME'``, ``'VALID'`` or ``((top, bottom), (left, right))``
      with non-negative entries. ``'SAME'`` gives ``ceil(H / sh)`` rows (the
      odd padding row, if any, at the bottom), as lax.
    strides: ``s`` or ``(sh, sw)``, positive.
    impl: ``'custom'`` (the rules of this module), ``'lax'``
      (``lax.conv_general_dilated`` with XLA's own gradients, for reference)
      or ``None`` (module-level :data:`IMPL`, ``'custom'`` unless changed).

  Returns:
    ``(N, H', W', Cout)`` with ``H' = (H + top + bottom - kh) // sh + 1``
    (likewise W').

  Raises:
    ValueError: on ranks, channel counts, padding, strides or ``impl`` that do
      not fit.
  """
  if jnp.ndim(x) != 4 or jnp.ndim(w) != 4:
    raise ValueError(
        f"conv2d expects x (N, H, W, Cin) and w (kh, kw, Cin, Cout); got shapes "
        f"{jnp.shape(x)} and {jnp.shape(w)}")
  if x.shape[-1] != w.shape[2]:
    raise ValueError(
        f"conv2d: x has {x.shape[-1]} channels but the kernel expects "
        f"{w.shape[2]} (x {x.shape}, w {w.shape})")
  impl = IMPL if impl is None else impl
  if impl not in IMPLS:
    raise ValueError(f"conv2d: unknown impl {impl!r}; choose one of {IMPLS}")
  st = _strides(strides)
  pads = _pads(padding, w.shape[:2], st, x.shape[1:3])
  (pt, pb), (pl, pr) = pads
  kh, kw = w.shape[:2]
  if x.shape[1] + pt + pb < kh or x.shape[2] + pl + pr < kw:
    raise ValueError(
        f"conv2d: kernel {w.shape[:2]} does not fit the padded input "
        f"{x.shape[1:3]} with padding {pads}")
  if impl == "lax":
    return checkpoint_name(
        lax.conv_general_dilated(x, w, st, pads, dimension_numbers=_DN),
        CONV_NAME)
  # Rows and columns past the last strided window never reach the output:
  # take them off the bottom padding, then off x, so that the three maps see
  # exact geometry (their transposes then have x's shape).
  cut_h = (x.shape[1] + pt + pb - kh) % st[0]
  cut_w = (x.shape[2] + pl + pr - kw) % st[1]
  if cut_h or cut_w:
    pads = ((pt, pb - min(cut_h, pb)), (pl, pr - min(cut_w, pr)))
    x = x[:, :x.shape[1] - max(cut_h - pb, 0), :x.shape[2] - max(cut_w - pr, 0)]
  # Named so that a remat policy can keep it (metajax.core.remat, 'conv').
  return checkpoint_name(_conv(x, w, pads, st), CONV_NAME)


# ---------------------------------------------------------------------------
# max-pooling
# ---------------------------------------------------------------------------
def _windows(x, k):
  n, h, w, c = x.shape
  ho, wo = h // k, w // k
  return x[:, :ho * k, :wo * k].reshape(n, ho, k, wo, k, c)


def _max_and_argmax_of(values):
  """Elementwise maximum of same-shape ``values`` and the index of the first
  one holding it, from one pass of selects (a strict ``>`` keeps the first of
  equal values)."""
  best, idx = values[0], jnp.zeros(values[0].shape, jnp.int32)
  for i, v in enumerate(values[1:], 1):
    take = v > best
    best = jnp.where(take, v, best)
    idx = jnp.where(take, jnp.int32(i), idx)
  return best, idx


def _max_and_argmax(x, k):
  """Window maxima ``(N, Ho, Wo, C)`` and the row-major index in ``[0, k*k)``
  of the first maximum."""
  xw = _windows(x, k)
  return _max_and_argmax_of([xw[:, :, a, :, b, :]
                             for a in range(k) for b in range(k)])


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_pool(x, k):
  # Elementwise maxima of the k * k window positions, not a reduce: XLA:CPU's
  # YNN reduce fusion pulled a reduce_max together with the following
  # convolution into one library call that ran 2x slower.
  xw = _windows(x, k)
  out = xw[:, :, 0, :, 0, :]
  for i in range(1, k * k):
    out = jnp.maximum(out, xw[:, :, i // k, :, i % k, :])
  return out


@_max_pool.defjvp
def _max_pool_jvp(k, primals, tangents):
  x, = primals
  dx, = tangents
  # Value and index come from the same selects (higher orders differentiate
  # the selects, which pick the same element as the index).
  p, idx = _max_and_argmax(x, k)
  dxw = _windows(dx, k)
  # Shape (k, 1, k, 1): a full-size iota was materialised every step.
  pos = (jnp.arange(k, dtype=jnp.int32)[:, None, None, None] * k
         + jnp.arange(k, dtype=jnp.int32)[:, None])
  at_max = pos == lax.stop_gradient(idx)[:, :, None, :, None, :]
  dp = jnp.sum(jnp.where(at_max, dxw, jnp.zeros((), dx.dtype)), axis=(2, 4))
  return p, dp


def max_pool(x: jax.Array, window: int = 2) -> jax.Array:
  """Non-overlapping ``window x window`` max-pool, VALID (trailing rows cut).

  Same values as ``lax.reduce_window(x, -inf, lax.max, (1, k, k, 1),
  (1, k, k, 1), 'VALID')``; the derivative routes each window's tangent /
  cotangent to its first maximum (row-major), as PyTorch's ``max_pool2d``
  does. Forward and reverse mode, any order.

  Args:
    x: ``(N, H, W, C)`` floating-point inputs.
    window: window side and stride ``k >= 1``.

  Returns:
    ``(N, H // k, W // k, C)``.

  Raises:
    ValueError: if ``x`` is not 4-D or the window is larger than ``H`` or ``W``.
  """
  window = int(window)
  if jnp.ndim(x) != 4:
    raise ValueError(f"max_pool expects (N, H, W, C) inputs, got shape "
                     f"{jnp.shape(x)}")
  if window < 1 or window > x.shape[1] or window > x.shape[2]:
    raise ValueError(
        f"max_pool window {window} does not fit spatial size {x.shape[1:3]}")
  return _max_pool(x, window)


@jax.custom_jvp
def _max_of(values):
  out = values[0]
  for v in values[1:]:
    out = jnp.maximum(out, v)
  return out


@_max_of.defjvp
def _max_of_jvp(primals, tangents):
  values, = primals
  dvalues, = tangents
  best, idx = _max_and_argmax_of(values)
  idx = lax.stop_gradient(idx)
  out = dvalues[0]
  for i, dv in enumerate(dvalues[1:], 1):
    out = jnp.where(idx == i, dv, out)
  return best, out


def max_of(values) -> jax.Array:
  """Elementwise maximum of a sequence of same-shape arrays.

  The derivative routes each element's tangent / cotangent to the first
  array holding the maximum (the tie-break of :func:`max_pool` when
  ``values`` are a window's positions in row-major order), with the index
  taken in the same pass as the maximum, as :func:`max_pool`. Any order.
  """
  values = tuple(values)
  if not values or any(jnp.shape(v) != jnp.shape(values[0]) for v in values):
    raise ValueError(f"max_of expects one or more arrays of one shape, got "
                     f"shapes {[jnp.shape(v) for v in values]}")
  return _max_of(values)


# ---------------------------------------------------------------------------
# convolution -> batch norm -> max-pool with few input channels
# ---------------------------------------------------------------------------
#: :func:`conv2d_pool_phases` serves convolutions with at most this many input
#: channels (conv-4's first block on Omniglot). At 80 x 84 x 84 x 3 -> 32 the
#: patch covariance (27 x 27 over 564,480 positions) made the block's
#: gradient 2.4x slower, and moments taken from the phases instead gained
#: nothing (175 against 173 ms on one core).
POOL_PHASES_MAX_CIN = 1


class PooledConv(NamedTuple):
  """A stride-1 convolution's output as ``window ** 2`` pooling phases.

  ``phases[a * window + b][n, i, j]`` is the convolution's output at
  ``(window * i + a, window * j + b)``, for the ``H' // window`` by
  ``W' // window`` positions a VALID ``window`` max-pool reads. ``mean`` and
  ``var`` (biased) are the full output's per-channel moments over all
  ``count = N * H' * W'`` positions, bias not included.
  """
  phases: tuple
  mean: jax.Array
  var: jax.Array
  count: int
  window: int


def _patch_rows(x, kernel_hw, pads):
  """The transposed patch matrix: row ``(a * kw + b) * Cin + c`` holds
  ``xpad[n, i + a, j + b, c]`` over all output positions ``(n, i, j)``.
  Stacked on a leading axis, each row is a copy of contiguous runs (a
  concatenation along the last axis of 1-channel slices was 25x slower at
  600 x 28 x 28)."""
  kh, kw = kernel_hw
  ho = x.shape[1] + sum(pads[0]) - kh + 1
  wo = x.shape[2] + sum(pads[1]) - kw + 1
  rows = [v[..., c] for v in _shifted(_pad_hw(x, pads), kh, kw, ho, wo)
          for c in range(x.shape[-1])]
  return jnp.stack(rows).reshape(len(rows), -1)


def conv2d_moments(x: jax.Array, w: jax.Array, padding="SAME"):
  """Per-channel mean and biased variance of ``conv2d(x, w, padding)``
  (stride 1, over ``N, H', W'``), without the output.

  The output is ``P @ w`` for the ``(N * H' * W', kh * kw * Cin)`` patch
  matrix ``P``, so its mean is ``mean(P) @ w`` and its variance
  ``w^T cov(P) w``, channel by channel. Cost ``O(N H' W' (kh kw Cin)^2)``:
  for few input channels, less than reading the output. The derivative in
  ``w`` is then a small matrix product (``2 cov(P) w``) instead of passes
  over the full-size output, which dominated conv-4's first block on
  Omniglot.
  """
  pads = _pads(padding, w.shape[:2])
  p = _patch_rows(x, w.shape[:2], pads)             # (kh * kw * Cin, positions)
  mean_p = jnp.mean(p, axis=1)
  centred = p - mean_p[:, None]
  cov = lax.dot_general(centred, centred, (((1,), (1,)), ((), ()))) / p.shape[1]
  wm = w.reshape(-1, w.shape[-1])
  var = jnp.einsum("kc,kl,lc->c", wm, cov, wm)
  # cov is positive semi-definite; rounding must not make a variance negative.
  return mean_p @ wm, jnp.maximum(var, 0)


def conv2d_pool_phases(x: jax.Array, w: jax.Array, padding="SAME",
                       window: int = 2, moments_dtype=None) -> PooledConv:
  """A stride-1 ``conv2d`` kept as the phases of a ``window`` max-pool.

  Each phase is a stride-``window`` convolution on the custom rules (few
  input channels: broadcast products forward, one matrix product for the
  kernel gradient); the moments come from :func:`conv2d_moments`. Followed
  by :func:`max_of` over the phases, this gives ``max_pool(conv2d(x, w))``
  and the batch-norm statistics of ``conv2d(x, w)`` without materialising
  or differentiating the full-size output (conv-4's first block on Omniglot,
  100 x 28 x 28 x 1 -> 64, on one core beside another job: the block's
  gradient 19-35 ms on the full map, 10-11 ms on the phases).

  Args:
    x: ``(N, H, W, Cin)``.
    w: ``(kh, kw, Cin, Cout)``.
    padding: as :func:`conv2d`.
    window: the max-pool's window and stride.
    moments_dtype: dtype of the moments' computation (``None``: ``x``'s;
      float32 under bfloat16 compute).

  Returns:
    :class:`PooledConv`.
  """
  window = int(window)
  pads = _pads(padding, w.shape[:2])
  kh, kw = w.shape[:2]
  ho = x.shape[1] + sum(pads[0]) - kh + 1
  wo = x.shape[2] + sum(pads[1]) - kw + 1
  hq, wq = (ho // window, wo // window) if window >= 1 else (0, 0)
  if hq < 1 or wq < 1:
    raise ValueError(f"conv2d_pool_phases: window {window} does not fit the "
                     f"{ho}x{wo} convolution output")
  xp = _pad_hw(x, pads)
  phases = tuple(
      conv2d(xp[:, a:a + window * (hq - 1) + kh, b:b + window * (wq - 1) + kw],
             w, "VALID", window)
      for a in range(window) for b in range(window))
  md = moments_dtype or x.dtype
  mean, var = conv2d_moments(x.astype(md), w.astype(md), pads)
  return PooledConv(phases, mean, var, x.shape[0] * ho * wo, window)
