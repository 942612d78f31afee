"""Array ops for the model zoo, written for speed under nested autodiff on CPU.

``conv2d``: a stride-1 NHWC/HWIO convolution. Its forward pass, its input
gradient and its kernel gradient are three bilinear maps, each with a custom
VJP written in terms of the other two, so gradients of any order stay on the
fast paths below (MAML's meta-gradient differentiates the backward pass).
For ``y = conv(x, w)`` with cotangent ``dy``:

    dx = conv_input_grad(dy, w)      (full correlation with the flipped kernel)
    dw = conv_kernel_grad(x, dy)     (correlation of x with dy, summed over N)

and, for cotangents ``c`` of those two maps,
``vjp(conv_input_grad) = (conv(c, w), conv_kernel_grad(c, dy))`` and
``vjp(conv_kernel_grad) = (conv_input_grad(dy, c), conv(x, c))``.
Why not XLA's own transpose rules: they produce convolutions with permuted
dimension numbers that XLA:CPU runs many times slower (measured 10-60x for
the kernel gradient, worst inside loops). Implementations (measured on a
2-core AVX-512 CPU, conv-4 MAML shapes):

* kernel gradient with few input channels: one ``dot_general`` of the
  ``kh * kw * Cin`` shifted copies with ``dy`` (4x faster), unchunked;
* forward pass with few input channels: a sum of ``kh * kw * Cin``
  broadcast products, one elementwise fusion (0.5-0.9 ms against 2.7-3.1 ms
  for ``lax.conv_general_dilated`` on 75 x 28 x 28 x 1 -> 64; see
  ``benchmarks/README.md``);
* kernel gradient otherwise: a convolution with the batch as the contracted
  feature axis, split into batch chunks of at most ``KERNEL_GRAD_POSITIONS``
  output positions (large single calls fell off cache: 5x slower at
  300 x 14 x 14 x 64 under YNN; XLA's own kernels, which
  :mod:`metajax.xla_cpu` selects, are less sensitive);
* forward pass otherwise, and input gradient: ``lax.conv_general_dilated``.

``conv2d`` supports reverse-mode autodiff of any order (``jax.grad``,
``jax.vjp``, nested); forward mode (``jax.jvp``, ``jax.jacfwd``) is not
available through ``custom_vjp``.

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

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")
#: up to this many input channels, the kernel gradient uses shifted copies
#: instead of a convolution.
SMALL_CIN = 3
#: kernel-gradient convolutions are split into batch chunks with at most this
#: many output positions (N * H' * W') each; ``0`` disables chunking.
KERNEL_GRAD_POSITIONS = 5000


# ---------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------
def _pads(padding, kernel_hw):
  """``((top, bottom), (left, right))`` for a padding spec (``ValueError`` if bad)."""
  if isinstance(padding, str):
    if padding == "SAME":
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


def _shifted(xp, kh, kw, ho, wo):
  """The ``kh * kw`` windows ``xp[:, a:a+ho, b:b+wo]``, row-major in (a, b)."""
  return [xp[:, a:a + ho, b:b + wo, :] for a in range(kh) for b in range(kw)]


def _forward(x, w, pads):
  cin = x.shape[-1]
  if cin > SMALL_CIN:
    return lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=_DN)
  kh, kw = w.shape[:2]
  ho = x.shape[1] + sum(pads[0]) - kh + 1
  wo = x.shape[2] + sum(pads[1]) - kw + 1
  out = None
  for i, v in enumerate(_shifted(_pad_hw(x, pads), kh, kw, ho, wo)):
    for c in range(cin):
      t = v[..., c:c + 1] * w[i // kw, i % kw, c]
      out = t if out is None else out + t
  return out


def _input_grad(dy, w, pads):
  kh, kw = w.shape[:2]
  (pt, pb), (pl, pr) = pads
  # Full correlation with the spatially flipped, in/out-swapped kernel; a
  # padding larger than kernel - 1 becomes a negative (cropping) padding.
  w_t = _materialize(jnp.swapaxes(w[::-1, ::-1], 2, 3))
  return lax.conv_general_dilated(
      dy, w_t, (1, 1), ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr)),
      dimension_numbers=_DN)


def _kernel_grad_chunk(x, dy, pads, kernel_hw):
  kh, kw = kernel_hw
  cin = x.shape[-1]
  if cin <= SMALL_CIN:
    xp = _pad_hw(x, pads)
    patches = jnp.concatenate(_shifted(xp, kh, kw, dy.shape[1], dy.shape[2]),
                              axis=-1)
    g = lax.dot_general(patches, dy, (((0, 1, 2), (0, 1, 2)), ((), ())))
    return g.reshape(kh, kw, cin, dy.shape[-1])
  # Channels of x play the batch, images the contracted features, dy the
  # (large) kernel: out[a, b, c, o] = sum_n,i,j xpad[n, i+a, j+b, c] dy[n, i, j, o],
  # written as a canonical NHWC/HWIO convolution of explicit transposes.
  xt = _materialize(jnp.transpose(x, (3, 1, 2, 0)))      # (Cin, H, W, N)
  dyt = _materialize(jnp.transpose(dy, (1, 2, 0, 3)))    # (H', W', N, Cout)
  g = lax.conv_general_dilated(xt, dyt, (1, 1), pads, dimension_numbers=_DN)
  return jnp.transpose(g, (1, 2, 0, 3))                  # (kh, kw, Cin, Cout)


def _kernel_grad(x, dy, pads, kernel_hw):
  n = x.shape[0]
  positions = dy.shape[1] * dy.shape[2]
  if (x.shape[-1] <= SMALL_CIN or not KERNEL_GRAD_POSITIONS
      or n * positions <= KERNEL_GRAD_POSITIONS):
    return _kernel_grad_chunk(x, dy, pads, kernel_hw)
  chunks = -(-n * positions // KERNEL_GRAD_POSITIONS)
  per = -(-n // chunks)
  out = None
  for i in range(0, n, per):
    g = _kernel_grad_chunk(x[i:i + per], dy[i:i + per], pads, kernel_hw)
    out = g if out is None else out + g
  return out


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, pads):
  return _forward(x, w, pads)


# The fwd rules call the custom functions themselves, not their bodies: at
# second order JAX differentiates the fwd rule, which must then stay on these
# custom rules instead of lax's transpose of a raw convolution.
def _conv_fwd(x, w, pads):
  return _conv(x, w, pads), (x, w)


def _conv_bwd(pads, res, dy):
  x, w = res
  return _conv_t(dy, w, pads), _conv_k(x, dy, pads, w.shape[:2])


_conv.defvjp(_conv_fwd, _conv_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_t(dy, w, pads):
  """Input gradient of ``_conv`` (the transpose of ``x -> conv(x, w)``)."""
  return _input_grad(dy, w, pads)


def _conv_t_fwd(dy, w, pads):
  return _conv_t(dy, w, pads), (dy, w)


def _conv_t_bwd(pads, res, c):
  dy, w = res
  return _conv(c, w, pads), _conv_k(c, dy, pads, w.shape[:2])


_conv_t.defvjp(_conv_t_fwd, _conv_t_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_k(x, dy, pads, kernel_hw):
  """Kernel gradient of ``_conv`` (the transpose of ``w -> conv(x, w)``)."""
  return _kernel_grad(x, dy, pads, kernel_hw)


def _conv_k_fwd(x, dy, pads, kernel_hw):
  return _conv_k(x, dy, pads, kernel_hw), (x, dy)


def _conv_k_bwd(pads, kernel_hw, res, c):
  x, dy = res
  return _conv_t(dy, c, pads), _conv(x, c, pads)


_conv_k.defvjp(_conv_k_fwd, _conv_k_bwd)


def conv2d(x: jax.Array, w: jax.Array, padding="SAME") -> jax.Array:
  """Stride-1 2-D convolution (cross-correlation, as in every DL framework).

  ``y[n, i, j, o] = sum_{a, b, c} xpad[n, i + a, j + b, c] * w[a, b, c, o]``
  with ``xpad`` the zero-padded input. Same values as
  ``lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=
  ('NHWC', 'HWIO', 'NHWC'))``; faster gradients of any order on CPU (see the
  module docstring). Reverse-mode autodiff only.

  Args:
    x: ``(N, H, W, Cin)`` inputs.
    w: ``(kh, kw, Cin, Cout)`` kernel.
    padding: ``'SAME'``, ``'VALID'`` or ``((top, bottom), (left, right))``
      with non-negative entries.

  Returns:
    ``(N, H', W', Cout)`` with ``H' = H + top + bottom - kh + 1`` (likewise W').

  Raises:
    ValueError: on ranks, channel counts or padding that do not fit.
  """
  if jnp.ndim(x) != 4 or jnp.ndim(w) != 4:
    raise ValueError(
        f"conv2d expects x (N, H, W, Cin) and w (kh, kw, Cin, Cout); got shapes "
        f"{jnp.shape(x)} and {jnp.shape(w)}")
  if x.shape[-1] != w.shape[2]:
    raise ValueError(
        f"conv2d: x has {x.shape[-1]} channels but the kernel expects "
        f"{w.shape[2]} (x {x.shape}, w {w.shape})")
  pads = _pads(padding, w.shape[:2])
  (pt, pb), (pl, pr) = pads
  ho = x.shape[1] + pt + pb - w.shape[0] + 1
  wo = x.shape[2] + pl + pr - w.shape[1] + 1
  if ho < 1 or wo < 1:
    raise ValueError(
        f"conv2d: kernel {w.shape[:2]} does not fit the padded input "
        f"{x.shape[1:3]} with padding {pads}")
  return _conv(x, w, pads)


# ---------------------------------------------------------------------------
# max-pooling
# ---------------------------------------------------------------------------
def _windows(x, k):
  n, h, w, c = x.shape
  ho, wo = h // k, w // k
  return x[:, :ho * k, :wo * k].reshape(n, ho, k, wo, k, c)


def _max_and_argmax(x, k):
  """Window maxima ``(N, Ho, Wo, C)`` and the row-major index in ``[0, k*k)``
  of the first maximum, from one elementwise pass over the ``k*k`` window
  positions (a strict ``>`` keeps the first of equal values)."""
  xw = _windows(x, k)
  best, idx = None, None
  for a in range(k):
    for b in range(k):
      v = xw[:, :, a, :, b, :]
      if best is None:
        best, idx = v, jnp.zeros(v.shape, jnp.int32)
      else:
        take = v > best
        best = jnp.where(take, v, best)
        idx = jnp.where(take, jnp.int32(a * k + b), idx)
  return best, idx


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
