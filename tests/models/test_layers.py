"""metajax.models.layers: the pooled-side NormReluMaxPool against the plain
batch norm -> ReLU -> max-pool composition (values, first and second order,
negative scales, the conv bias), and batch-norm moments' custom derivative
against autodiff of the textbook formula, all in float64."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from metajax.models import NormReluMaxPool, TransductiveBatchNorm, layers

from tests.helpers import rel_err


def ref_pool(x, window=2):
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                           (1, window, window, 1), "VALID")


def ref_block(y, conv_bias, scale, bias, norm):
  """Bias, textbook batch norm, ReLU, then a lax max-pool (the unfused order)."""
  y = y + conv_bias
  if norm == "transductive":
    mean = jnp.mean(y, (0, 1, 2))
    var = jnp.mean(jnp.square(y - mean), (0, 1, 2))
    y = (y - mean) / jnp.sqrt(var + 1e-5) * scale + bias
  return ref_pool(jax.nn.relu(y))


def _inputs(seed, shape=(3, 5, 6, 4)):
  rng = np.random.default_rng(seed)
  y = jnp.asarray(rng.standard_normal(shape) * 2 + 0.5)
  c = shape[-1]
  conv_bias = jnp.asarray(rng.standard_normal(c))
  # Mixed signs: negative scales take the min-pool side of the identity.
  scale = jnp.asarray(rng.standard_normal(c) + np.array([1.0, -1.0] * (c // 2)))
  bias = jnp.asarray(rng.standard_normal(c) * 0.5)
  r = jnp.asarray(rng.standard_normal((shape[0], shape[1] // 2, shape[2] // 2, c)))
  return y, conv_bias, scale, bias, r


def _fused(norm):
  mod = NormReluMaxPool(norm)

  def f(y, conv_bias, scale, bias):
    params = {"params": {"scale": scale, "bias": bias}} if norm == "transductive" else {}
    return mod.apply(params, y, conv_bias)
  return f


@pytest.mark.parametrize("norm", ["transductive", "none"])
def test_norm_relu_max_pool_matches_unfused_order(norm):
  with jax.enable_x64(True):
    y, cb, scale, bias, r = _inputs(0)
    assert bool(jnp.any(scale < 0)) and bool(jnp.any(scale > 0))
    fused = _fused(norm)
    ref = lambda *a: ref_block(*a, norm)
    out = fused(y, cb, scale, bias)
    assert out.shape == (3, 2, 3, 4)   # odd width: trailing column cut
    np.testing.assert_allclose(out, ref(y, cb, scale, bias), rtol=1e-12, atol=1e-12)
    assert float(jnp.mean(out > 0)) > 0.2   # ReLU does not zero everything

    loss = lambda fn: lambda *a: jnp.sum(jnp.tanh(fn(*a)) * r)
    args = (y, cb, scale, bias)
    g = jax.jit(jax.grad(loss(fused), (0, 1, 2, 3)))(*args)
    g_ref = jax.grad(loss(ref), (0, 1, 2, 3))(*args)
    for name, a, b in zip(("y", "conv_bias", "scale", "bias"), g, g_ref):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-11, err_msg=name)

    # Second order: MAML differentiates the gradient with respect to the
    # block's inputs and parameters.
    u = jax.tree_util.tree_map(lambda a: jnp.cos(3 * a), args)

    def outer(fn):
      def h(*a):
        gs = jax.grad(loss(fn), (0, 1, 2, 3))(*a)
        return sum(jnp.sum(gi * ui) for gi, ui in zip(gs, u))
      return h

    g2 = jax.jit(jax.grad(outer(fused), (0, 2, 3)))(*args)
    g2_ref = jax.grad(outer(ref), (0, 2, 3))(*args)
    assert rel_err(g2, g2_ref) < 1e-10


def test_conv_bias_cancels_in_batch_norm():
  """With batch norm the conv bias changes nothing; its gradient is zero."""
  with jax.enable_x64(True):
    y, cb, scale, bias, r = _inputs(1)
    f = _fused("transductive")
    np.testing.assert_allclose(f(y, cb, scale, bias), f(y, 0 * cb, scale, bias),
                               rtol=1e-12, atol=1e-12)
    g = jax.grad(lambda b: jnp.sum(f(y, b, scale, bias) * r))(cb)
    np.testing.assert_allclose(g, 0, atol=1e-12)


def test_same_parameters_as_transductive_batch_norm():
  y = jnp.zeros((2, 4, 4, 3))
  a = NormReluMaxPool().init(jax.random.PRNGKey(0), y)
  b = TransductiveBatchNorm().init(jax.random.PRNGKey(0), y)
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  with pytest.raises(ValueError, match="unknown norm policy"):
    NormReluMaxPool("layer").init(jax.random.PRNGKey(0), y)


def test_moments_derivatives_match_autodiff_of_the_formula():
  def textbook(x):
    mean = jnp.mean(x, (0, 1))
    return mean, jnp.mean(jnp.square(x - mean), (0, 1))

  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((4, 5, 3)) * 3 + 1)
    r, s = (jnp.asarray(rng.standard_normal(3)) for _ in range(2))
    f = lambda mom: lambda x: jnp.sum(jnp.sin(mom(x)[0]) * r + jnp.sqrt(mom(x)[1]) * s)
    for a, b in zip(layers._moments(x), textbook(x)):
      np.testing.assert_allclose(a, b, rtol=1e-13)
    np.testing.assert_allclose(jax.grad(f(layers._moments))(x),
                               jax.grad(f(textbook))(x), rtol=1e-11, atol=1e-13)
    hvp = lambda mom: jax.grad(lambda x: jnp.sum(jax.grad(f(mom))(x) * x[..., :1]))(x)
    np.testing.assert_allclose(hvp(layers._moments), hvp(textbook), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(jax.jvp(layers._moments, (x,), (x ** 2,))[1],
                               jax.jvp(textbook, (x,), (x ** 2,))[1], rtol=1e-11)
