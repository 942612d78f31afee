"""bfloat16 compute with float32 parameters (``Conv4(dtype=...)``, ``MLP(dtype=...)``)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax as mj
from metajax.models import MLP, Conv4

BF16 = jnp.bfloat16


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / np.linalg.norm(b)


def _flat(tree):
  return np.concatenate([np.ravel(np.asarray(l, np.float64))
                         for l in jax.tree_util.tree_leaves(tree)])


@pytest.mark.parametrize("downsample,norm", [("maxpool", "transductive"),
                                             ("stride", "maml"),
                                             ("maxpool", "running")])
def test_conv4_bf16_keeps_float32_params_and_outputs(downsample, norm):
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 16, 16, 1))
  full = Conv4(3, filters=8, downsample=downsample, norm=norm)
  mixed = Conv4(3, filters=8, downsample=downsample, norm=norm, dtype=BF16)
  variables = full.init(jax.random.PRNGKey(1), x)
  mixed_variables = mixed.init(jax.random.PRNGKey(1), x)
  # Same variables, all float32; the same initial parameters (running
  # statistics at init are batch moments, taken from bfloat16 activations).
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
      mixed_variables)
  assert all(b.dtype == jnp.float32
             for b in jax.tree_util.tree_leaves(mixed_variables))
  for a, b in zip(jax.tree_util.tree_leaves(variables["params"]),
                  jax.tree_util.tree_leaves(mixed_variables["params"])):
    np.testing.assert_array_equal(a, b)
  params = {"params": variables["params"]}
  out, out_mixed = full.apply(params, x), mixed.apply(params, x)
  assert out_mixed.dtype == jnp.float32
  # bfloat16 has an 8-bit mantissa: a few 1e-3 relative, never exact.
  err = _rel(out_mixed, out)
  assert 1e-5 < err < 5e-2, err


def test_mixed_precision_changes_nothing_when_unset():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 16, 1))
  model = Conv4(2, filters=4)
  params = model.init(jax.random.PRNGKey(1), x)
  np.testing.assert_array_equal(model.apply(params, x),
                                Conv4(2, filters=4, dtype=None).apply(params, x))


def test_mlp_bf16():
  x = jnp.linspace(-5, 5, 10)[:, None]
  full, mixed = MLP((40, 40), 1), MLP((40, 40), 1, dtype=BF16)
  params = full.init(jax.random.PRNGKey(0), x)
  assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(
      mixed.init(jax.random.PRNGKey(0), x)))
  y = mixed.apply(params, x)
  assert y.dtype == jnp.float32
  assert _rel(y, full.apply(params, x)) < 5e-2


def _tasks(key, n=2, ways=3, shots=1, queries=2, size=16):
  k1, k2 = jax.random.split(key)
  lab = lambda m: jnp.tile(jnp.repeat(jnp.arange(ways), m), (n, 1))  # noqa: E731
  return mj.Task(jax.random.normal(k1, (n, ways * shots, size, size, 1)), lab(shots),
                 jax.random.normal(k2, (n, ways * queries, size, size, 1)), lab(queries))


def test_maml_meta_gradient_in_bf16_is_float32_and_close():
  """Second-order MAML through a bfloat16 inner loop (MAML's Omniglot net:
  stride 2, offset-only batch norm): the fast weights and the meta-gradient
  stay float32 and point where the float32 ones do.

  Not close elementwise: measured 15-42% relative difference on conv-4 at
  16-28 pixels a side, with max-pool or stride 2 (cosine 0.94-0.99); with
  max-pool, windows whose bfloat16 values tie route their gradient to
  another element, and batch norm's gradient cancels in bfloat16."""
  tasks = _tasks(jax.random.PRNGKey(0), size=16)
  task = mj.task_slice(tasks, 0)
  grads = {}
  for name, dtype in (("f32", None), ("bf16", BF16)):
    learner = mj.MAML(Conv4(3, filters=8, downsample="stride", norm="maml",
                            dtype=dtype),
                      loss="cross_entropy", inner_steps=1, inner_lr=0.4)
    params = learner.init(jax.random.PRNGKey(1), task)
    adapted = jax.jit(lambda p: learner.adapt(p, task.support_x,
                                              task.support_y))(params)
    assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(adapted))
    g = jax.jit(jax.grad(lambda p: learner.task_loss(p, task)[0]))(params)
    assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(g))
    grads[name] = _flat(g)
  cos = grads["f32"] @ grads["bf16"] / (np.linalg.norm(grads["f32"]) *
                                        np.linalg.norm(grads["bf16"]))
  assert cos > 0.9, cos
  assert not np.allclose(grads["f32"], grads["bf16"])  # bfloat16 did run


def test_bf16_meta_training_lowers_the_loss():
  tasks = _tasks(jax.random.PRNGKey(2), n=4)
  learner = mj.MAML(Conv4(3, filters=8, dtype=BF16), loss="cross_entropy",
                    inner_steps=1, inner_lr=0.4)
  opt = optax.adam(3e-3)
  state = mj.init_state(learner, opt, jax.random.PRNGKey(3), mj.task_slice(tasks, 0))
  step = mj.make_meta_step(learner, opt)
  losses = []
  for _ in range(15):
    state, m = step(state, tasks)
    losses.append(float(m["loss"]))
  assert all(np.isfinite(losses))
  assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(state.params))
  assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
