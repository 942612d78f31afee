"""FOMAML, ANIL, BOIL and Meta-SGD against hand-written references; the
registry."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax.core import learner as learner_lib
from metajax.algorithms import registry as learners
from metajax import models
from metajax.core import task_map
from metajax.data.sinusoid import sample_tasks
from metajax.algorithms.maml import MAML
from metajax.core.tasks import task_slice

ALPHA = 0.05


def _f64(tree):
  return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), tree)


def _flat(tree):
  return np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(tree)])


def _setup():
  """A tanh MLP (smooth, so second-order terms are nonzero), one task."""
  model = models.MLP(hidden=(5, 5), activation=nn.tanh)
  task = task_slice(sample_tasks(jax.random.PRNGKey(0), 1, 6, 7,
                                 dtype=jnp.float64), 0)
  params = _f64(MAML(model).init(jax.random.PRNGKey(1), task))
  apply = lambda p, x: model.apply({"params": p}, x)
  support = lambda p: jnp.mean((apply(p, task.support_x) - task.support_y) ** 2)
  query = lambda p: jnp.mean((apply(p, task.query_x) - task.query_y) ** 2)
  return model, task, params, support, query


def _sgd(p, g, lr):
  return jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g)


def test_fomaml_gradient_is_query_gradient_at_adapted_params():
  with jax.enable_x64(True):
    model, task, params, support, query = _setup()
    steps = 3
    lrn = learners.fomaml(model, inner_steps=steps, inner_lr=ALPHA)
    _, grads = jax.jit(lrn.task_grad)(params, task)

    # by hand: adapt with plain gradient steps, then grad L_Q at phi_K
    @jax.jit
    def reference(theta):
      phi = theta
      for _ in range(steps):
        phi = _sgd(phi, jax.grad(support)(phi), ALPHA)
      return jax.grad(query)(phi)

    want = reference(params["model"])
    np.testing.assert_allclose(_flat(grads["model"]), _flat(want), rtol=1e-10,
                               atol=1e-12)
    # second-order MAML differs (the Hessian terms are not zero here)
    _, exact = jax.jit(MAML(model, inner_steps=steps,
                            inner_lr=ALPHA).task_grad)(params, task)
    assert np.max(np.abs(_flat(exact["model"]) - _flat(want))) > 1e-6


def test_anil_equals_maml_with_frozen_body_inner_loop():
  with jax.enable_x64(True):
    model, task, params, support, query = _setup()
    steps = 2
    lrn = learners.anil(model, inner_steps=steps, inner_lr=ALPHA)
    _, grads = jax.jit(lrn.task_grad)(params, task)

    # by hand: split body / head, adapt the head only, differentiate through
    def objective(body, head):
      def merged(h):
        return {**body, "head": h}
      h = head
      for _ in range(steps):
        g = jax.grad(lambda hh: support(merged(hh)))(h)
        h = _sgd(h, g, ALPHA)
      return query(merged(h))

    body = {k: v for k, v in params["model"].items() if k != "head"}
    g_body, g_head = jax.jit(jax.grad(objective, argnums=(0, 1)))(
        body, params["model"]["head"])
    np.testing.assert_allclose(_flat(grads["model"]["head"]), _flat(g_head),
                               rtol=1e-10, atol=1e-12)
    for k in body:
      np.testing.assert_allclose(_flat(grads["model"][k]), _flat(g_body[k]),
                                 rtol=1e-10, atol=1e-12)
    # the body is meta-learned (nonzero gradient) but not adapted
    assert np.abs(_flat(g_body)).max() > 1e-6
    adapted = lrn.adapt(params, task.support_x, task.support_y)
    for k in body:
      np.testing.assert_array_equal(_flat(adapted[k]), _flat(body[k]))
    # ...and differs from full MAML, which adapts the body too
    _, full = jax.jit(MAML(model, inner_steps=steps,
                           inner_lr=ALPHA).task_grad)(params, task)
    assert np.max(np.abs(_flat(full["model"]) - _flat(grads["model"]))) > 1e-6


def test_boil_equals_maml_with_frozen_head_inner_loop():
  with jax.enable_x64(True):
    model, task, params, support, query = _setup()
    steps = 2
    lrn = learners.boil(model, inner_steps=steps, inner_lr=ALPHA,
                        loss="mse")
    _, grads = jax.jit(lrn.task_grad)(params, task)

    # by hand: the body takes the inner steps, the head stays theta's
    def objective(body, head):
      b = body
      for _ in range(steps):
        g = jax.grad(lambda bb: support({**bb, "head": head}))(b)
        b = _sgd(b, g, ALPHA)
      return query({**b, "head": head})

    body = {k: v for k, v in params["model"].items() if k != "head"}
    head = params["model"]["head"]
    g_body, g_head = jax.jit(jax.grad(objective, argnums=(0, 1)))(body, head)
    np.testing.assert_allclose(_flat(grads["model"]["head"]), _flat(g_head),
                               rtol=1e-10, atol=1e-12)
    for k in body:
      np.testing.assert_allclose(_flat(grads["model"][k]), _flat(g_body[k]),
                                 rtol=1e-10, atol=1e-12)
    # the head is meta-learned but never adapted; the body adapts
    assert np.abs(_flat(g_head)).max() > 1e-6
    adapted = lrn.adapt(params, task.support_x, task.support_y)
    np.testing.assert_array_equal(_flat(adapted["head"]), _flat(head))
    assert np.abs(_flat(adapted["dense0"]) - _flat(body["dense0"])).max() > 0
    assert learners.make("boil", model).inner_lr == 0.5  # the paper's step


def test_metasgd_with_equal_rates_reduces_to_maml():
  with jax.enable_x64(True):
    model, task, params, support, query = _setup()
    lrn = learners.metasgd(model, inner_steps=1, inner_lr=ALPHA)
    p = _f64(lrn.init(jax.random.PRNGKey(1), task))
    # one rate per parameter, all initialised to alpha (float32 in flax)
    assert jax.tree_util.tree_structure(p["inner_lr"]) == \
        jax.tree_util.tree_structure(p["model"])
    np.testing.assert_allclose(_flat(p["inner_lr"]), ALPHA, rtol=1e-7)
    p["inner_lr"] = jax.tree_util.tree_map(
        lambda a: jnp.full_like(a, ALPHA), p["inner_lr"])
    _, grads = jax.jit(lrn.task_grad)(p, task)
    _, maml_grads = jax.jit(MAML(model, inner_steps=1,
                                 inner_lr=ALPHA).task_grad)(
        {"model": p["model"]}, task)
    np.testing.assert_allclose(_flat(grads["model"]),
                               _flat(maml_grads["model"]), rtol=1e-10,
                               atol=1e-12)
    # d L_Q(theta - a * g_S) / d a = -g_S * grad L_Q(phi), element-wise
    g_s = jax.grad(support)(p["model"])
    phi = _sgd(p["model"], g_s, ALPHA)
    g_q = jax.grad(query)(phi)
    want = jax.tree_util.tree_map(lambda a, b: -a * b, g_s, g_q)
    np.testing.assert_allclose(_flat(grads["inner_lr"]), _flat(want),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["maml", "fomaml", "anil", "metasgd"])
def test_variant_meta_trains_on_sinusoid(name):
  lrn = learners.make(name, models.MLP(hidden=(32, 32)),
                      setting="sinusoid_10shot", eval_inner_steps=3)
  opt = optax.adam(1e-2)
  held = sample_tasks(jax.random.PRNGKey(0), 32, 10, 10)
  state = learner_lib.init_state(lrn, opt, jax.random.PRNGKey(1),
                                 task_slice(held, 0))
  step = learner_lib.make_meta_step(lrn, opt)

  @jax.jit
  def held_out(params):
    loss = task_map.mean_over_tasks(lambda t: lrn.task_loss(params, t)[0],
                                    held)
    return loss, lrn.evaluate(params, task_slice(held, 0))

  before, _ = held_out(state.params)
  for i in range(100):
    state, _ = step(state, sample_tasks(jax.random.PRNGKey(100 + i), 8, 10, 10))
  after, curve = held_out(state.params)
  assert float(after) < 0.85 * float(before)
  assert curve["loss"].shape == (4,)  # eval_inner_steps + 1


def test_registry():
  assert set(learners.names()) >= {"maml", "fomaml", "anil", "metasgd",
                                   "mamlpp", "reptile", "imaml"}
  conv = models.Conv4(filters=4)
  assert learners.make("maml", conv,
                       setting="omniglot_5way_1shot").inner_lr == 2.0
  assert learners.make("fomaml", conv).first_order
  assert learners.make("metasgd", conv).learn_inner_lr == "per_param"
  assert learners.make("anil", conv).adapt_mask("head/kernel")
  assert not learners.make("anil", conv).adapt_mask("conv0/kernel")
  assert learners.make("mamlpp", conv, setting="omniglot_5way_1shot").inner_lr == 0.1
  assert learners.make("reptile", conv).inner_batch_size == 10
  assert learners.make("imaml", conv, lam=3.0).lam == 3.0
  with pytest.raises(ValueError, match="unknown learner 'nope'"):
    learners.get("nope")
  with pytest.raises(ValueError, match="unknown paper setting"):
    learners.make("maml", conv, setting="cifar")
  with pytest.raises(ValueError, match="already registered"):
    learners.register("maml", learners.maml)
  with pytest.raises(ValueError, match="not callable"):
    learners.register("x", 3)
  with pytest.raises(ValueError, match="non-empty"):
    learners.register("", learners.maml)
  try:
    learners.register("my_maml", lambda model, **kw: MAML(model, **kw))
    assert "my_maml" in learners.names()
    assert learners.make("my_maml", conv, inner_steps=2).inner_steps == 2
    learners.register("my_maml", learners.fomaml, overwrite=True)
    assert learners.make("my_maml", conv).first_order
  finally:
    learners._REGISTRY.pop("my_maml", None)


def test_boil_meta_trains_on_classification_tasks():
  from tests.helpers import class_tasks, train_loss_drop
  tasks = class_tasks(5, num_tasks=4, ways=3, shots=2, query=3, dim=6)
  lrn = learners.make("boil", models.MLP((16,), 3))  # the paper's step 0.5
  before, after = train_loss_drop(lrn, tasks, steps=30, lr=1e-2)
  assert after < 0.7 * before
