"""Strided metajax.models.ops.conv2d against lax.conv_general_dilated: values,
first-, second- and third-order gradients in float64 (SAME padding at even and
odd sizes, VALID and explicit paddings that leave rows the strided windows
never reach, 1 and 8 input channels), the Conv layer's routing, and a stride-2
conv-4 MAML meta-gradient against the same network on lax convolutions."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import metajax as mj
from metajax.models import Conv, Conv4, ops

from tests.helpers import flat, rel_err

DN = ("NHWC", "HWIO", "NHWC")


def ref_conv(x, w, padding, strides):
  st = (strides, strides) if isinstance(strides, int) else strides
  return lax.conv_general_dilated(x, w, st, padding, dimension_numbers=DN)


def _arrays(seed, *shapes):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.standard_normal(s)) for s in shapes]


# (H, W, Cin, padding, strides[, kernel]): SAME at Omniglot's sizes
# 28 -> 14 -> 7 -> 4 -> 2 and at 5 and 3 (odd: one padding row each side;
# even: the extra row at the bottom); VALID and explicit paddings where
# (H + pads - k) is not a multiple of the stride, so conv2d cuts rows; a
# non-square stride and stride 3. Outputs smaller than the kernel (4 -> 2,
# 3 -> 2, 4 x 3 -> 2 x 2 with a 3 x 2 kernel, the last case) take the phase-split input gradient; in the last,
# the kernel is smaller than the stride (rows no window reaches).
CASES = [
    (28, 28, 1, "SAME", 2),
    (28, 28, 8, "SAME", 2),
    (14, 14, 8, "SAME", 2),
    (14, 14, 1, "SAME", 2),
    (7, 7, 8, "SAME", 2),
    (7, 7, 1, "SAME", 2),
    (5, 5, 8, "SAME", 2),
    (5, 6, 1, "SAME", 2),
    (4, 4, 8, "SAME", 2),
    (3, 4, 1, "SAME", 2),
    (4, 3, 8, "SAME", 2, (3, 2)),
    (8, 8, 8, "VALID", 2),
    (7, 6, 1, "VALID", 2),
    (9, 7, 8, "VALID", 2),
    (6, 5, 8, ((1, 0), (2, 1)), (2, 3)),
    (9, 8, 2, ((3, 2), (0, 3)), 3),
    (5, 4, 8, "VALID", 3, (2, 2)),
]
CASES = [c if len(c) == 6 else c + ((3, 3),) for c in CASES]
IDS = [f"{h}x{w}x{c}-{p if isinstance(p, str) else 'explicit'}"
       f"-s{s if isinstance(s, int) else 'x'.join(map(str, s))}-k{kh}{kw}"
       for h, w, c, p, s, (kh, kw) in CASES]
TOL = dict(rtol=1e-10, atol=1e-12)


def _case(h, w, cin, khw, seed=0):
  return _arrays(seed, (3, h, w, cin), tuple(khw) + (cin, 4))


def _close(a, b, **tol):
  a, b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(a) == len(b)
  for u, v in zip(a, b):
    assert u.shape == v.shape
    np.testing.assert_allclose(u, v, **(tol or TOL))


@pytest.mark.parametrize("h,w,cin,padding,strides,khw", CASES, ids=IDS)
def test_strided_values_and_first_order(h, w, cin, padding, strides, khw):
  with jax.enable_x64(True):
    x, k = _case(h, w, cin, khw)
    y = ops.conv2d(x, k, padding, strides)
    y_ref = ref_conv(x, k, padding, strides)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    (r,) = _arrays(1, y.shape)
    f = lambda fn: lambda x, k: jnp.sum(jnp.tanh(fn(x, k, padding, strides)) * r)
    _close(jax.jit(jax.grad(f(ops.conv2d), (0, 1)))(x, k),
           jax.grad(f(ref_conv), (0, 1))(x, k), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("h,w,cin,padding,strides,khw", CASES, ids=IDS)
def test_strided_second_order(h, w, cin, padding, strides, khw):
  """Gradients of gradients, jitted: a mixed second-order objective, the
  Hessian-vector products in x and in w, and a MAML-style meta-gradient
  ``d/dw L_query(w - a * dL_support/dw)``."""
  with jax.enable_x64(True):
    x, k = _case(h, w, cin, khw, seed=2)
    (xq,) = _arrays(3, x.shape)
    y_shape = ref_conv(x, k, padding, strides).shape
    r, u, v = _arrays(4, y_shape, x.shape, k.shape)

    def check(make):
      _close(jax.jit(make(ops.conv2d))(x, k), make(ref_conv)(x, k))

    def loss(fn, x, k):
      return jnp.sum(jnp.tanh(fn(x, k, padding, strides)) * r)

    def mixed(fn):
      def h(x, k):
        gx, gk = jax.grad(lambda x, k: loss(fn, x, k), (0, 1))(x, k)
        return jnp.sum(gx * u) + jnp.sum(gk * v)
      return jax.grad(h, (0, 1))

    def hvp_x(fn):
      return lambda x, k: jax.grad(lambda x: jnp.sum(
          jax.grad(lambda x: loss(fn, x, k))(x) * u))(x)

    def hvp_w(fn):
      return lambda x, k: jax.grad(lambda k: jnp.sum(
          jax.grad(lambda k: loss(fn, x, k))(k) * v))(k)

    def maml(fn):
      def meta(k):
        adapted = k - 0.3 * jax.grad(lambda k: loss(fn, x, k))(k)
        return jnp.sum(jnp.sin(fn(xq, adapted, padding, strides)) * r)
      return lambda x, k: jax.grad(meta)(k)

    for make in (mixed, hvp_x, hvp_w, maml):
      check(make)


THIRD = [5, 8, 13]  # 7x7x1 SAME, 4x4x8 SAME (phase split), 9x7x8 VALID


@pytest.mark.parametrize("h,w,cin,padding,strides,khw",
                         [CASES[i] for i in THIRD], ids=[IDS[i] for i in THIRD])
def test_strided_third_order(h, w, cin, padding, strides, khw):
  """Third order along directions: d/dw <d/dw <d/dw L, v>, v> and the same
  through x."""
  with jax.enable_x64(True):
    x, k = _case(h, w, cin, khw, seed=5)
    y_shape = ref_conv(x, k, padding, strides).shape
    r, u, v = _arrays(6, y_shape, x.shape, k.shape)

    def third(fn):
      loss = lambda x, k: jnp.sum(jnp.tanh(fn(x, k, padding, strides)) * r)
      g2 = lambda x, k: jnp.sum(jax.grad(loss, (0, 1))(x, k)[1] * v)
      g3 = lambda x, k: (jnp.sum(jax.grad(g2, 0)(x, k) * u)
                         + jnp.sum(jax.grad(g2, 1)(x, k) * v))
      return jax.grad(g3, (0, 1))

    _close(jax.jit(third(ops.conv2d))(x, k), third(ref_conv)(x, k))


def test_strided_chunked_gradients(monkeypatch):
  """Batch-chunked kernel and input gradients (uneven last chunk) at stride 2."""
  monkeypatch.setattr(ops, "KERNEL_GRAD_POSITIONS", 20)  # 7 images of 3x3 -> 4 chunks
  monkeypatch.setattr(ops, "INPUT_GRAD_POSITIONS", 30)   # -> 3 chunks
  with jax.enable_x64(True):
    x, k = _arrays(7, (7, 6, 5, 6), (3, 3, 6, 3))
    (r,) = _arrays(8, (7, 3, 3, 3))

    def loss(fn):
      inner = lambda x, k: jnp.sum(jnp.tanh(fn(x, k, "SAME", 2)) * r)
      return lambda x, k: sum(jnp.sum(g ** 2) for g in jax.grad(inner, (0, 1))(x, k))

    _close(jax.jit(jax.grad(loss(ops.conv2d), (0, 1)))(x, k),
           jax.grad(loss(ref_conv), (0, 1))(x, k))


def test_strided_float32_matches_reference():
  """The float32 path (XLA:CPU's library kernels) agrees with lax in float32."""
  x, k = [a.astype(jnp.float32) for a in _arrays(9, (4, 14, 14, 8), (3, 3, 8, 8))]
  (r,) = [a.astype(jnp.float32) for a in _arrays(10, (4, 7, 7, 8))]
  f = lambda fn: jax.jit(jax.grad(
      lambda x, k: jnp.sum(fn(x, k, "SAME", 2) * r), (0, 1)))
  np.testing.assert_allclose(ops.conv2d(x, k, "SAME", 2), ref_conv(x, k, "SAME", 2),
                             rtol=1e-4, atol=1e-4)
  _close(f(ops.conv2d)(x, k), f(ref_conv)(x, k), rtol=1e-4, atol=1e-3)


def test_impl_lax_and_conv_layer_routing(monkeypatch):
  """``Conv(strides=2)`` runs on the custom rules; ``impl='lax'`` (or
  ``ops.IMPL = 'lax'``) on a plain lax convolution, with equal values."""
  x, k = _arrays(11, (2, 9, 9, 3), (3, 3, 3, 5))
  layer = Conv(5, 3, strides=2)
  params = layer.init(jax.random.PRNGKey(0), x)
  loss = lambda p: jnp.sum(layer.apply(p, x) ** 2)
  assert "custom_vjp_call" in str(jax.make_jaxpr(jax.grad(loss))(params))
  y = layer.apply(params, x)
  assert y.shape == (2, 5, 5, 5)
  kernel = params["params"]["kernel"]
  np.testing.assert_allclose(
      y, ref_conv(x, kernel, "SAME", 2) + params["params"]["bias"], rtol=1e-5,
      atol=1e-5)
  assert "custom_vjp_call" not in str(
      jax.make_jaxpr(lambda x: ops.conv2d(x, k, "SAME", 2, impl="lax"))(x))
  monkeypatch.setattr(ops, "IMPL", "lax")
  assert "custom_vjp_call" not in str(jax.make_jaxpr(jax.grad(loss))(params))


def test_strided_bad_input():
  x, k = jnp.zeros((2, 5, 5, 3)), jnp.zeros((3, 3, 3, 4))
  for bad in (0, -1, (2,), (2, 0), "2x"):
    with pytest.raises(ValueError, match="strides"):
      ops.conv2d(x, k, "SAME", bad)
  with pytest.raises(ValueError, match="impl"):
    ops.conv2d(x, k, "SAME", 2, impl="xla")
  with pytest.raises(ValueError, match="does not fit"):
    ops.conv2d(jnp.zeros((2, 2, 2, 3)), k, "VALID", 2)
  assert ops.conv2d(x, k, "SAME", (2, 3)).shape == (2, 3, 2, 4)


def test_stride_conv4_maml_meta_gradient_matches_lax(monkeypatch):
  """A jitted stride-2 conv-4 MAML meta-gradient (second order, one inner
  step) on the custom rules equals the one with lax convolutions
  (``ops.IMPL = 'lax'``). Two blocks, 6 -> 3 -> 2, meet an even and an odd
  input, a 1-channel and a 4-channel layer, and both input-gradient paths
  (3 x 3 and 2 x 2 cotangents); four blocks took twice the compile time."""
  with jax.enable_x64(True):
    # Data and parameters from numpy: drawing them with jax (eager, float64)
    # took longer than the compilations under test.
    sx, qx = _arrays(12, (2, 6, 6, 1), (4, 6, 6, 1))
    task = mj.Task(sx, jnp.arange(2, dtype=jnp.int32), qx,
                   jnp.asarray([0, 0, 1, 1], jnp.int32))
    learner = mj.MAML(Conv4(2, filters=4, blocks=2, downsample="stride"),
                      loss="cross_entropy", inner_steps=1, inner_lr=0.4, ways=2)
    shapes = jax.eval_shape(learner.init, jax.random.PRNGKey(1), task)
    rng = np.random.default_rng(13)
    params = jax.tree_util.tree_map(
        lambda a: jnp.asarray(0.7 * rng.standard_normal(a.shape)), shapes)

    def task_grad(impl):
      monkeypatch.setattr(ops, "IMPL", impl)
      # a fresh function each time, traced once: the jaxpr shows which
      # convolution ran, and tracing decides it (IMPL is read then)
      traced = jax.jit(lambda p, t: learner.task_grad(p, t)).trace(params, task)
      assert ("custom_vjp_call" in str(traced.jaxpr)) == (impl == "custom")
      return traced.lower().compile()(params, task)

    (_, m), g = task_grad("custom")
    (_, m_ref), g_ref = task_grad("lax")
    np.testing.assert_allclose(m["loss"], m_ref["loss"], rtol=1e-12)
    assert np.linalg.norm(flat(g_ref)) > 0
    assert rel_err(g, g_ref) < 1e-10
