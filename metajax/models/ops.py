"""Array ops for the model zoo, written for speed under nested autodiff.

``conv2d``: a stride-1 NHWC/HWIO convolution with a custom VJP whose
backward pass is again made of stride-1 NHWC convolutions (of itself, so
second-order gradients stay on the same fast path). XLA's own transpose
rules produce convolutions with permuted dimension numbers that XLA:CPU runs
tens of times slower inside loops (measured on the weight gradient); the
rewrite keeps every convolution in the canonical layout.

``max_pool``: non-overlapping max-pooling as reshape + masked sum, whose
backward is an elementwise product instead of ``reduce_window``'s scatter.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def _pads(padding, kernel_hw):
  if isinstance(padding, str):
    if padding == "SAME":
      return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_hw)
    if padding == "VALID":
      return ((0, 0), (0, 0))
    raise ValueError(f"padding must be 'SAME', 'VALID' or pairs, got {padding!r}")
  return tuple((int(a), int(b)) for a, b in padding)


def conv2d(x: jax.Array, w: jax.Array, padding="SAME") -> jax.Array:
  """Stride-1 2-D convolution.

  Args:
    x: ``(N, H, W, Cin)`` inputs.
    w: ``(kh, kw, Cin, Cout)`` kernel.
    padding: ``'SAME'``, ``'VALID'`` or ``((top, bottom), (left, right))``.

  Returns:
    ``(N, H', W', Cout)`` with ``H' = H + top + bottom - kh + 1``.
  """
  return _conv(x, w, _pads(padding, w.shape[:2]))


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, w, pads):
  return lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=_DN)


def _conv_fwd(x, w, pads):
  return _conv(x, w, pads), (x, w)


def _conv_bwd(pads, res, dy):
  x, w = res
  kh, kw = w.shape[:2]
  (pt, pb), (pl, pr) = pads
  # Input gradient: full correlation of dy with the flipped, in/out-swapped
  # kernel.
  w_t = jnp.swapaxes(w[::-1, ::-1], 2, 3)
  dx = _conv(dy, w_t, ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr)))
  # Kernel gradient: a convolution with the channel axis as batch and the
  # images as features: (Cin, H, W, N) * (Ho, Wo, N, Cout) -> (Cin, kh, kw, Cout).
  dw = _conv(jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(dy, (1, 2, 0, 3)),
             pads)
  return dx, jnp.transpose(dw, (1, 2, 0, 3))


_conv.defvjp(_conv_fwd, _conv_bwd)


def max_pool(x: jax.Array, window: int = 2) -> jax.Array:
  """Non-overlapping ``window x window`` max-pool, VALID (trailing rows cut).

  ``x``: ``(N, H, W, C)`` -> ``(N, H // window, W // window, C)``.

  Written as ``sum(onehot(argmax) * x)`` over each window, with the one-hot
  mask held constant. ``jnp.max``'s own gradient finds the maximum by an
  equality test ``x == max(x)``; after XLA fuses and recomputes ``x`` the two
  sides can differ in the last bit, the test fails and the window's gradient
  silently vanishes (seen as noisy, non-smooth MAML meta-losses with two or
  more inner steps). The mask is exact, routes the gradient to the first
  maximum as PyTorch does, and its second derivative is zero as it should be.
  """
  n, h, w, c = x.shape
  ho, wo = h // window, w // window
  x = x[:, :ho * window, :wo * window]
  x = x.reshape(n, ho, window, wo, window, c).transpose(0, 1, 3, 5, 2, 4)
  x = x.reshape(n, ho, wo, c, window * window)
  mask = jax.lax.stop_gradient(
      jax.nn.one_hot(jnp.argmax(x, axis=-1), window * window, dtype=x.dtype))
  return jnp.sum(mask * x, axis=-1)
