"""metajax.models.ops against lax references: values, first- and higher-order
gradients (float64, tiny shapes), the chunked and small-channel paths, tie
handling of max_pool, bad input, and a whole conv-4 MAML meta-gradient under
jit (which once caught wrong max-pool gradients from XLA fusion)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import metajax as mj
from metajax.models import Conv4, ops

from tests.helpers import image_tasks, rel_err, to64

DN = ("NHWC", "HWIO", "NHWC")


def ref_conv(x, w, padding="SAME"):
  return lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN)


def ref_pool(x, window=2):
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                           (1, window, window, 1), "VALID")


def _arrays(seed, *shapes):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.standard_normal(s)) for s in shapes]


PADDINGS = ["SAME", "VALID", ((1, 0), (2, 1)), ((3, 2), (0, 3))]
# (Cin, kernel): Cin <= SMALL_CIN takes the broadcast-product forward and
# Cin <= KERNEL_GRAD_SMALL_CIN the shifted-copy kernel gradient, larger the
# convolution paths; a non-square kernel checks the (kh, kw) bookkeeping.
SHAPES = [(1, (3, 3)), (3, (3, 2)), (6, (3, 3)), (4, (2, 3))]
# Each padding with each path, without the full cross product (compile time):
# both channel paths meet SAME and an asymmetric explicit padding.
CASES = [(p, cin, khw) for i, p in enumerate(PADDINGS)
         for j, (cin, khw) in enumerate(SHAPES) if (i + j) % 2 == 0]


def _conv_case(cin, khw, seed=0):
  x, w = _arrays(seed, (3, 6, 5, cin), khw + (cin, 4))
  return x, w


@pytest.mark.parametrize("padding,cin,khw", CASES)
def test_conv2d_values_and_first_order(padding, cin, khw):
  with jax.enable_x64(True):
    x, w = _conv_case(cin, khw)
    y = ops.conv2d(x, w, padding)
    y_ref = ref_conv(x, w, padding)
    assert y.shape == y_ref.shape
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    (r,) = _arrays(1, y.shape)
    f = lambda fn: lambda x, w: jnp.sum(jnp.tanh(fn(x, w, padding)) * r)
    g = jax.grad(f(ops.conv2d), (0, 1))(x, w)
    g_ref = jax.grad(f(ref_conv), (0, 1))(x, w)
    for a, b in zip(g, g_ref):
      np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("padding,cin,khw", CASES)
def test_conv2d_second_order(padding, cin, khw):
  """Gradients of gradients (MAML's meta-gradient pattern), jitted; third
  order too for two cases."""
  with jax.enable_x64(True):
    x, w = _conv_case(cin, khw, seed=2)
    y_shape = ref_conv(x, w, padding).shape
    r, u, v = _arrays(3, y_shape, x.shape, w.shape)

    def outer(fn):
      def inner(x, w):
        return jnp.sum(jnp.tanh(fn(x, w, padding)) * r)

      def h(x, w):
        gx, gw = jax.grad(inner, (0, 1))(x, w)
        return jnp.sum(gx * u) + jnp.sum(gw * v)
      return h

    g2 = jax.jit(jax.grad(outer(ops.conv2d), (0, 1)))(x, w)
    g2_ref = jax.grad(outer(ref_conv), (0, 1))(x, w)
    for a, b in zip(g2, g2_ref):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-11)
    if padding != "SAME":
      return
    # third order along a direction: d/dw of <d h / d w, v>
    third = lambda fn: jax.grad(
        lambda w: jnp.sum(jax.grad(outer(fn), 1)(x, w) * v))(w)
    np.testing.assert_allclose(third(ops.conv2d), third(ref_conv), rtol=1e-10,
                               atol=1e-11)


@pytest.mark.parametrize("cin", [4, 6])
def test_conv2d_kernel_grad_chunks(monkeypatch, cin):
  """Batch-chunked kernel gradients (uneven last chunk) match the reference."""
  monkeypatch.setattr(ops, "KERNEL_GRAD_POSITIONS", 45)  # 7 images of 6x5 -> 4 chunks
  with jax.enable_x64(True):
    x, w = _arrays(4, (7, 6, 5, cin), (3, 3, cin, 3))
    (r,) = _arrays(5, (7, 6, 5, 3))

    def loss(fn):
      def inner(w):
        return jnp.sum(jnp.tanh(fn(x, w)) * r)
      return lambda w: jnp.sum(jax.grad(inner)(w) ** 2)

    first = lambda fn: jax.grad(lambda w: jnp.sum(fn(x, w) * r))(w)
    np.testing.assert_allclose(first(ops.conv2d), first(ref_conv), rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(jax.jit(jax.grad(loss(ops.conv2d)))(w),
                               jax.grad(loss(ref_conv))(w), rtol=1e-10, atol=1e-11)


def test_conv2d_float32_matches_reference():
  """The float32 path (XLA:CPU's library kernels) agrees with lax in float32."""
  x, w = [a.astype(jnp.float32) for a in _arrays(6, (4, 10, 10, 8), (3, 3, 8, 8))]
  (r,) = [a.astype(jnp.float32) for a in _arrays(7, (4, 10, 10, 8))]
  f = lambda fn: jax.jit(jax.grad(lambda x, w: jnp.sum(fn(x, w) * r), (0, 1)))
  np.testing.assert_allclose(ops.conv2d(x, w), ref_conv(x, w), rtol=1e-4, atol=1e-4)
  for a, b in zip(f(ops.conv2d)(x, w), f(ref_conv)(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_conv2d_bad_input():
  x, w = jnp.zeros((2, 5, 5, 3)), jnp.zeros((3, 3, 3, 4))
  with pytest.raises(ValueError, match="channels"):
    ops.conv2d(x, jnp.zeros((3, 3, 2, 4)))
  with pytest.raises(ValueError, match="expects x"):
    ops.conv2d(x[0], w)
  with pytest.raises(ValueError, match="padding"):
    ops.conv2d(x, w, "FULL")
  with pytest.raises(ValueError, match="non-negative"):
    ops.conv2d(x, w, ((-1, 0), (0, 0)))
  with pytest.raises(ValueError, match="does not fit"):
    ops.conv2d(jnp.zeros((2, 2, 2, 3)), w, "VALID")


@pytest.mark.parametrize("shape,window", [((2, 6, 6, 3), 2), ((2, 7, 5, 2), 2),
                                          ((1, 9, 7, 2), 3)])
def test_max_pool_values_and_gradients(shape, window):
  with jax.enable_x64(True):
    x, = _arrays(8, shape)
    p = ops.max_pool(x, window)
    p_ref = ref_pool(x, window)
    np.testing.assert_array_equal(p, p_ref)
    r, v = _arrays(9, p.shape, shape)
    f = lambda pool: lambda x: jnp.sum(pool(x, window) ** 2 * r)
    np.testing.assert_allclose(jax.jit(jax.grad(f(ops.max_pool)))(x),
                               jax.grad(f(ref_pool))(x), rtol=1e-13, atol=1e-14)
    # reverse-over-reverse and forward-over-reverse second order
    rr = lambda pool: lambda x: jax.grad(
        lambda x: jnp.sum(jax.grad(f(pool))(x) * v))(x)
    np.testing.assert_allclose(jax.jit(rr(ops.max_pool))(x), rr(ref_pool)(x),
                               rtol=1e-13, atol=1e-14)
    fr = lambda pool: jax.jvp(jax.grad(f(pool)), (x,), (v,))[1]
    np.testing.assert_allclose(fr(ops.max_pool), fr(ref_pool), rtol=1e-13,
                               atol=1e-14)


def test_max_pool_ties_go_to_first_maximum():
  """Ties (e.g. all-zero windows after ReLU) route the gradient to the first
  maximum in row-major order, like reduce_window and PyTorch."""
  x = jnp.asarray([[0., 2., 2., 1.], [2., 0., 0., 0.]])[None, :, :, None]
  g = jax.grad(lambda x: jnp.sum(ops.max_pool(x, 2)))(x)
  g_ref = jax.grad(lambda x: jnp.sum(ref_pool(x, 2)))(x)
  np.testing.assert_array_equal(g[0, :, :, 0], [[0., 1., 1., 0.], [0., 0., 0., 0.]])
  np.testing.assert_array_equal(g, g_ref)


def test_max_pool_bad_input():
  with pytest.raises(ValueError, match="expects"):
    ops.max_pool(jnp.zeros((4, 4, 3)))
  with pytest.raises(ValueError, match="does not fit"):
    ops.max_pool(jnp.zeros((1, 3, 3, 1)), 4)


class _RefConv(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    w = self.param("kernel", nn.initializers.zeros, (3, 3, x.shape[-1], self.features))
    return ref_conv(x, w) + self.param("bias", nn.initializers.zeros, (self.features,))


class _RefNorm(nn.Module):
  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    mean = jnp.mean(x, (0, 1, 2))
    var = jnp.mean(jnp.square(x - mean), (0, 1, 2))
    return ((x - mean) / jnp.sqrt(var + 1e-5) * self.param("scale", nn.initializers.ones, (c,))
            + self.param("bias", nn.initializers.zeros, (c,)))


class RefConv4(nn.Module):
  """Conv-4 in the textbook order (conv + bias, batch norm, ReLU, pool) on lax
  ops, with Conv4's parameter names."""
  num_outputs: int
  filters: int

  @nn.compact
  def __call__(self, x):
    for i in range(4):
      x = _RefNorm(name=f"norm{i}")(_RefConv(self.filters, name=f"conv{i}")(x))
      x = ref_pool(jax.nn.relu(x))
    return nn.Dense(self.num_outputs, name="head")(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("first_order", [False, True])
def test_conv4_maml_meta_gradient_matches_lax_reference(first_order):
  """A jitted conv-4 MAML meta-gradient (one inner step, transductive BN,
  max-pool) equals the same network written in the textbook order on lax
  ops (reference: lax.conv_general_dilated and reduce_window gradients use no
  equality masks, so the jitted reference is safe)."""
  with jax.enable_x64(True):
    tasks = image_tasks(jax.random.PRNGKey(0), num_tasks=1, ways=2, shots=2,
                        query=2, size=16)
    task = jax.tree_util.tree_map(lambda a: a[0], tasks)
    make = lambda model: mj.MAML(model, loss="cross_entropy", inner_steps=1,
                                 inner_lr=0.4, first_order=first_order, ways=2)
    learner, ref = make(Conv4(2, filters=4)), make(RefConv4(2, filters=4))
    params = to64(learner.init(jax.random.PRNGKey(1), task))
    # A negative batch-norm scale in every layer exercises the min-pool side
    # of the pooled-side batch norm.
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: a.at[0].set(-0.7) if "scale" in jax.tree_util.keystr(path) else a,
        params)
    assert (jax.tree_util.tree_structure(params)
            == jax.tree_util.tree_structure(ref.init(jax.random.PRNGKey(1), task)))
    (_, m), g = jax.jit(learner.task_grad)(params, task)
    (_, m_ref), g_ref = jax.jit(ref.task_grad)(params, task)
    np.testing.assert_allclose(m["loss"], m_ref["loss"], rtol=1e-12)
    assert rel_err(g, g_ref) < 1e-10
