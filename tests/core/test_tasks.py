"""Boundary checks: each bad task batch gets a ValueError naming the problem."""
import numpy as np
import optax
import pytest

import metajax as mj
from metajax.models import MLP, Conv4


def good(t=2, s=3, q=4):
  return mj.Task(np.zeros((t, s, 1), np.float32), np.zeros((t, s, 1), np.float32),
                 np.zeros((t, q, 1), np.float32), np.zeros((t, q, 1), np.float32))


def cls(t=2, ways=3, dtype=np.int32):
  y = np.tile(np.arange(ways), (t, 1)).astype(dtype)
  x = np.zeros((t, ways, 8, 8, 1), np.float32)
  return mj.Task(x, y, x, y)


@pytest.mark.parametrize("tasks,match", [
    (good()._replace(support_y=np.zeros((2, 2, 1), np.float32)), "support set size mismatch"),
    (good()._replace(query_y=np.zeros((2, 5, 1), np.float32)), "query set size mismatch"),
    (good()._replace(query_x=np.zeros((3, 4, 1), np.float32)), "task axis differs"),
    (good()._replace(query_x=np.zeros((2, 4, 2), np.float32)), "support and query inputs differ"),
    (good(s=0), "empty support set"),
    (good(q=0), "empty query set"),
    (good(t=0), "0 tasks"),
    (good()._replace(support_x=np.zeros((2,), np.float32)), "support_x has shape"),
])
def test_bad_shapes(tasks, match):
  with pytest.raises(ValueError, match=match):
    mj.check_tasks(tasks)


def test_label_dtype_and_range():
  with pytest.raises(ValueError, match="must be integers"):
    mj.check_tasks(cls(dtype=np.float32), classification=True)
  with pytest.raises(ValueError, match="regression targets must be floating"):
    mj.check_tasks(good()._replace(support_y=np.zeros((2, 3, 1), np.int32),
                                   query_y=np.zeros((2, 4, 1), np.int32)),
                   classification=False)
  with pytest.raises(ValueError, match="outside"):
    mj.check_tasks(cls(ways=3), ways=2)
  with pytest.raises(ValueError, match="larger than the model's 5 outputs"):
    mj.check_tasks(cls(ways=3), ways=6, num_outputs=5)
  with pytest.raises(ValueError, match="larger than the 4 classes"):
    mj.check_ways(5, 4)
  with pytest.raises(ValueError, match="expected a metajax.Task"):
    mj.check_tasks((1, 2, 3, 4))


def test_meta_step_rejects_bad_batches_before_compiling():
  learner = mj.MAML(Conv4(5, filters=2, blocks=1), loss="cross_entropy", ways=5)
  opt = optax.sgd(0.1)
  tasks = cls(ways=3)
  state = mj.init_state(learner, opt, np.array([0, 0], np.uint32), mj.core.tasks.task_slice(tasks, 0))
  step = mj.make_meta_step(learner, opt)
  with pytest.raises(ValueError, match="must be integers"):
    step(state, cls(dtype=np.float32))
  bad = tasks._replace(query_y=tasks.query_y + 7)
  with pytest.raises(ValueError, match="outside"):
    step(state, bad)
  big = mj.MAML(Conv4(5, filters=2, blocks=1), loss="cross_entropy", ways=7)
  with pytest.raises(ValueError, match="larger than the model"):
    big.check(tasks)
  reg = mj.MAML(MLP((4,), 1))
  with pytest.raises(ValueError, match="regression targets"):
    reg.check(tasks)
