"""metajax.models.ops.conv2d_pool_phases / conv2d_moments / max_of, and the
first conv-4 block built on them, against the full-map composition
(``conv2d`` -> moments -> ``max_pool``) and lax references, in float64:
values, first and second order, odd sizes, every batch-norm policy."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from metajax.models import Conv, NormReluMaxPool, ops

from tests.helpers import rel_err

DN = ("NHWC", "HWIO", "NHWC")


def _arrays(seed, *shapes):
  rng = np.random.default_rng(seed)
  return [jnp.asarray(rng.standard_normal(s)) for s in shapes]


def ref_pool(x, window):
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, window, window, 1),
                           (1, window, window, 1), "VALID")


def test_max_of_values_and_first_maximum_derivative():
  with jax.enable_x64(True):
    a = jnp.array([1.0, 3.0, 2.0, 5.0])
    b = jnp.array([1.0, 4.0, 2.0, 0.0])
    c = jnp.array([0.0, 4.0, 7.0, 5.0])
    np.testing.assert_array_equal(ops.max_of([a, b, c]), [1.0, 4.0, 7.0, 5.0])
    grads = jax.grad(lambda vs: jnp.sum(ops.max_of(vs) * jnp.arange(1.0, 5.0)))([a, b, c])
    # ties go to the first array holding the maximum
    np.testing.assert_array_equal(grads[0], [1.0, 0.0, 0.0, 4.0])
    np.testing.assert_array_equal(grads[1], [0.0, 2.0, 0.0, 0.0])
    np.testing.assert_array_equal(grads[2], [0.0, 0.0, 3.0, 0.0])
    with pytest.raises(ValueError, match="one shape"):
      ops.max_of([a, a[:2]])
    with pytest.raises(ValueError, match="one or more"):
      ops.max_of([])


@pytest.mark.parametrize("cin,padding", [(1, "SAME"), (2, "VALID"),
                                         (1, ((2, 0), (1, 1)))])
def test_conv2d_moments_match_the_output_and_its_gradient(cin, padding):
  with jax.enable_x64(True):
    x, w, r = _arrays(0, (3, 7, 6, cin), (3, 3, cin, 4), (2, 4))
    x = x + 0.8   # a mean far from zero, as images have

    def direct(w):
      y = ops.conv2d(x, w, padding)
      return jnp.mean(y, (0, 1, 2)), jnp.var(y, (0, 1, 2))

    def via_patches(w):
      return ops.conv2d_moments(x, w, padding)

    for got, want in zip(via_patches(w), direct(w)):
      np.testing.assert_allclose(got, want, rtol=1e-12)
    loss = lambda f: lambda w: jnp.sum(jnp.stack(f(w)) ** 2 * r)  # noqa: E731
    assert rel_err(jax.grad(loss(via_patches))(w), jax.grad(loss(direct))(w)) < 1e-12
    hvp = lambda f: jax.grad(lambda w: jnp.sum(jax.grad(loss(f))(w) * w))  # noqa: E731
    assert rel_err(hvp(via_patches)(w), hvp(direct)(w)) < 1e-12


# (H, W, padding, window): odd sizes leave rows and columns no window reads.
PHASE_CASES = [(8, 8, "SAME", 2), (7, 9, "SAME", 2), (9, 9, "VALID", 3)]


@pytest.mark.parametrize("h,w_,padding,window", PHASE_CASES)
def test_pool_phases_are_the_output_subgrids(h, w_, padding, window):
  with jax.enable_x64(True):
    x, w = _arrays(1, (2, h, w_, 1), (3, 3, 1, 3))
    y = lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN)
    pc = ops.conv2d_pool_phases(x, w, padding, window)
    hq, wq = y.shape[1] // window, y.shape[2] // window
    assert len(pc.phases) == window ** 2 and pc.window == window
    assert pc.count == y.shape[0] * y.shape[1] * y.shape[2]
    for i, p in enumerate(pc.phases):
      a, b = divmod(i, window)
      np.testing.assert_allclose(
          p, y[:, a:a + window * hq:window, b:b + window * wq:window], rtol=1e-12)
    np.testing.assert_allclose(ops.max_of(pc.phases), ref_pool(y, window), rtol=1e-12)
    np.testing.assert_allclose(pc.mean, jnp.mean(y, (0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(pc.var, jnp.var(y, (0, 1, 2)), rtol=1e-12)


class Block(nn.Module):
  """conv (1 input channel) -> NormReluMaxPool, through the pooling phases or
  the full map."""
  norm: str
  phases: bool
  window: int = 2

  @nn.compact
  def __call__(self, x):
    y, b = Conv(4, name="conv")(x, split_bias=True,
                                pool_window=self.window if self.phases else None)
    assert isinstance(y, ops.PooledConv) == self.phases
    return NormReluMaxPool(self.norm, self.window, name="norm")(y, b)


@pytest.mark.parametrize("norm", ["transductive", "running", "maml", "none"])
def test_first_block_on_phases_matches_the_full_map(norm):
  """Values, running statistics, and first- and second-order parameter
  gradients of conv -> batch norm -> ReLU -> max-pool agree whether the
  convolution is kept as pooling phases (one input channel) or as the full
  map; negative scales take the min-pool side."""
  with jax.enable_x64(True):
    x, r = _arrays(2, (3, 7, 8, 1), (3, 3, 4, 4))
    fused, full = Block(norm, True), Block(norm, False)
    variables = fused.init(jax.random.PRNGKey(0), x)
    assert (jax.tree_util.tree_structure(variables)
            == jax.tree_util.tree_structure(full.init(jax.random.PRNGKey(0), x)))
    params = jax.tree_util.tree_map(jnp.asarray, variables["params"])
    if "scale" in params.get("norm", {}):
      params["norm"]["scale"] = params["norm"]["scale"].at[1].set(-0.6)
    params["conv"]["bias"] = params["conv"]["bias"] + 0.3
    rest = {k: v for k, v in variables.items() if k != "params"}

    def loss(module):
      def f(p):
        if norm == "running":
          out, stats = module.apply({"params": p, **rest}, x, mutable=["batch_stats"])
          return jnp.sum(jnp.sin(out) * r), stats
        return jnp.sum(jnp.sin(module.apply({"params": p}, x)) * r), {}
      return f

    (v1, s1), (v2, s2) = loss(fused)(params), loss(full)(params)
    np.testing.assert_allclose(v1, v2, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)):
      np.testing.assert_allclose(a, b, rtol=1e-12)
    g = lambda m: jax.grad(lambda p: loss(m)(p)[0])  # noqa: E731
    assert rel_err(g(fused)(params), g(full)(params)) < 1e-10
    second = lambda m: jax.grad(  # noqa: E731
        lambda p: sum(jnp.sum(jnp.tanh(t)) for t in jax.tree_util.tree_leaves(g(m)(p))))
    assert rel_err(second(fused)(params), second(full)(params)) < 1e-9


def test_phases_only_where_they_pay():
  """More input channels than ops.POOL_PHASES_MAX_CIN, stride 2, the lax
  reference implementation or no split bias keep the full map."""
  class Probe(nn.Module):
    cin_strides: tuple

    @nn.compact
    def __call__(self, x):
      strides, split = self.cin_strides
      y = Conv(2, strides=strides)(x, split_bias=split, pool_window=2)
      return y[0] if split else y

  x1, x3 = jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, 8, 8, 3))
  kind = lambda x, strides=1, split=True: type(  # noqa: E731
      Probe((strides, split)).init_with_output(jax.random.PRNGKey(0), x)[0])
  assert kind(x1) is ops.PooledConv
  assert kind(x3) is not ops.PooledConv
  assert kind(x1, strides=2) is not ops.PooledConv
  assert kind(x1, split=False) is not ops.PooledConv
  old = ops.IMPL
  try:
    ops.IMPL = "lax"
    assert kind(x1) is not ops.PooledConv
  finally:
    ops.IMPL = old


def test_window_mismatch_is_named():
  x = jnp.zeros((1, 8, 8, 1))
  pc = ops.conv2d_pool_phases(x, jnp.zeros((3, 3, 1, 2)), "SAME", 2)
  with pytest.raises(ValueError, match="window=3"):
    NormReluMaxPool(window=3).init(jax.random.PRNGKey(0), pc)
  for window in (7, 0):
    with pytest.raises(ValueError, match="does not fit"):
      ops.conv2d_pool_phases(x, jnp.zeros((3, 3, 1, 2)), "VALID", window)


def test_conv4_uses_phases_for_feature_networks_by_default(monkeypatch):
  """``pool_phases=None``: phases for a feature network (no head), the full
  map with a head; an explicit value wins."""
  from metajax.models import Conv4
  calls = []
  original = ops.conv2d_pool_phases
  monkeypatch.setattr(ops, "conv2d_pool_phases",
                      lambda *a, **k: calls.append(1) or original(*a, **k))
  x = jnp.zeros((2, 4, 4, 1))
  small = dict(filters=2, blocks=1)
  for model, expected in [(Conv4(None, **small), 1), (Conv4(3, **small), 0),
                          (Conv4(3, pool_phases=True, **small), 1),
                          (Conv4(None, pool_phases=False, **small), 0)]:
    calls.clear()
    model.init(jax.random.PRNGKey(0), x)
    assert len(calls) == expected, model


def test_jitted_float32_phases_route_each_window_to_one_phase():
  """Under jit in float32, where XLA may recompute the phases in several
  fusions, every pooled element's cotangent goes to exactly one phase, also
  with many exact ties (quantised inputs, as binary images give)."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jnp.round(jax.random.uniform(k1, (20, 28, 28, 1)) * 4) / 4
  w = jax.random.normal(k2, (3, 3, 1, 16)) * 0.3
  r = jax.random.normal(k3, (20, 14, 14, 16))
  sign = jnp.where(jnp.arange(16) % 2 == 0, 1.0, -1.0)

  def f(eps, w):
    pc = ops.conv2d_pool_phases(x, w, "SAME", 2)
    return jnp.sum(sign * ops.max_of([sign * (p + e) for p, e in zip(pc.phases, eps)]) * r)
  grads = jax.jit(jax.grad(f))([jnp.zeros((20, 14, 14, 16))] * 4, w)
  routed = sum((np.asarray(g) != 0).astype(int) for g in grads)
  np.testing.assert_array_equal(routed, 1)
