"""SNAIL: causality, the query's label out of sight, training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.algorithms import registry
from metajax.algorithms.snail import SNAIL, SNAILNet, sequence
from metajax.models import MLP
from tests.helpers import class_tasks, one, train_loss_drop

SMALL = (("att", 8, 4), ("tc", 6), ("att", 8, 4))


def test_no_position_sees_a_later_one():
  net = SNAILNet(ways=3, length=7, blocks=SMALL)
  x = jax.random.normal(jax.random.PRNGKey(0), (7, 5))
  params = net.init(jax.random.PRNGKey(1), x)
  base = np.asarray(net.apply(params, x))
  for j in range(7):
    y = np.asarray(net.apply(params, x.at[j].add(3.0)))
    np.testing.assert_array_equal(y[:j], base[:j])  # earlier: untouched
    assert np.abs(y[j:] - base[j:]).max() > 1e-4    # later: affected


def test_the_query_label_is_never_visible():
  tasks = class_tasks(0, num_tasks=1, ways=3, shots=2, query=4, dim=6)
  t = one(tasks)
  learner = SNAIL(MLP((8,), 5), ways=3, blocks=SMALL)
  params = learner.init(jax.random.PRNGKey(0), t)
  seq = sequence(jnp.ones((6, 5)), t.support_y, jnp.ones(5), 3)
  np.testing.assert_array_equal(np.asarray(seq[-1, 5:]), 0.0)  # empty slot
  logits = learner.logits(params, t.support_x, t.support_y, t.query_x)
  # other queries' labels and images never reach a query's prediction
  shuffled = t._replace(query_y=t.query_y[::-1])
  np.testing.assert_array_equal(
      np.asarray(learner.logits(params, shuffled.support_x, shuffled.support_y,
                                shuffled.query_x)), np.asarray(logits))
  moved = jnp.asarray(t.query_x).at[1:].add(5.0)
  again = learner.logits(params, t.support_x, t.support_y, moved)
  np.testing.assert_allclose(np.asarray(again[0]), np.asarray(logits[0]),
                             rtol=1e-6)
  # the support labels are read: swapping two classes' labels changes it
  swapped = jnp.where(t.support_y == 0, 1, jnp.where(t.support_y == 1, 0,
                                                     t.support_y))
  assert np.abs(np.asarray(learner.logits(params, t.support_x, swapped,
                                          t.query_x)) - np.asarray(logits)
                ).max() > 1e-5


def test_snail_meta_trains():
  tasks = class_tasks(1, num_tasks=4, ways=3, shots=2, query=3, dim=6)
  learner = registry.make("snail", MLP((16,), 8), ways=3, blocks=SMALL)
  before, after = train_loss_drop(learner, tasks, steps=40, lr=3e-3)
  assert after < 0.7 * before
  with pytest.raises(ValueError, match="ways"):
    SNAIL(MLP((4,), 4))
  with pytest.raises(ValueError, match="unknown SNAIL block"):
    SNAIL(MLP((4,), 4), ways=3, blocks=(("lstm", 3),))
