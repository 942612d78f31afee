"""Bad inputs from issue 11, items 1-3: each gets a ValueError naming it.

Every row used to run: labels past the logits gave a NaN loss, ``(T, S)``
regression targets broadcast to a wrong loss, a single task without its task
axis was read as tasks of one example each, and bad sampler counts ended in
an ``MLIRError``. Tiny models keep each row well under a second.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax as mj
from metajax.data import gp, sinusoid
from metajax.models import MLP, Conv4
from metajax.training import fit

KEY = jax.random.PRNGKey(0)


def conv4(ways=5):
  return Conv4(ways, filters=2, blocks=2)


def image_tasks(t=2, ways=5, bad_label=None, xp=jnp):
  """``t`` 5-way 1-shot tasks of 8x8 images (one bad query label if asked)."""
  y = np.tile(np.arange(ways, dtype=np.int32), (t, 1))
  qy = y.copy()
  if bad_label is not None:
    qy[0, 0] = bad_label
  x = np.zeros((t, ways, 8, 8, 1), np.float32)
  return mj.Task(xp.asarray(x), xp.asarray(y), xp.asarray(x), xp.asarray(qy))


def regression_tasks(t=2, s=10, trailing=True):
  x = jnp.zeros((t, s, 1))
  y = jnp.zeros((t, s, 1) if trailing else (t, s))
  return mj.Task(x, y, x, y)


def through_step(learner, tasks):
  """One direct meta-step (``check=True``), initialised on a good task."""
  opt = optax.sgd(0.1)
  one = jax.tree_util.tree_map(lambda a: a[:1][0], image_tasks(1)
                               if learner.classification
                               else regression_tasks(1))
  state = mj.init_state(learner, opt, KEY, one)
  return mj.make_meta_step(learner, opt)(state, tasks)


def through_fit(learner, tasks, **kw):
  return fit(learner, optax.sgd(0.1), lambda rng: tasks, num_steps=1,
             steps_per_call=1, progress=False, **kw)


MAML5 = mj.MAML(conv4(), loss="cross_entropy", ways=5)
MAML_NO_WAYS = mj.MAML(conv4(), loss="cross_entropy")
MLP_REG = mj.MAML(MLP((4,), 1))
MLP_REG3 = mj.MAML(MLP((4,), 3))
BAD_LABELS = image_tasks(bad_label=7)
ONE_IMAGE_TASK = jax.tree_util.tree_map(lambda a: a[0], image_tasks())
ONE_REG_TASK = jax.tree_util.tree_map(lambda a: a[0], regression_tasks())

CASES = {
    "jnp labels, ways=5, step": (
        lambda: through_step(MAML5, BAD_LABELS),
        r"query_y holds labels in \[0, 7\], outside \[0, 5\) for a 5-way"),
    "jnp labels, no ways, step": (
        lambda: through_step(MAML_NO_WAYS, BAD_LABELS),
        r"outside \[0, 5\) for the model's 5 outputs"),
    "jnp labels, ways=5, fit on device": (
        lambda: through_fit(MAML5, BAD_LABELS),
        r"outside \[0, 5\) for a 5-way"),
    "jnp labels, no ways, fit on host": (
        lambda: through_fit(MAML_NO_WAYS, BAD_LABELS, sampler_on_device=False),
        r"outside \[0, 5\) for the model's 5 outputs"),
    "jnp labels, ProtoNet ways=5": (
        lambda: mj.algorithms.ProtoNet(
            Conv4(None, filters=2, blocks=2), ways=5).check(BAD_LABELS),
        r"outside \[0, 5\)"),
    "(T, S) regression targets, step": (
        lambda: through_step(MLP_REG, regression_tasks(trailing=False)),
        r"regression targets must be \(tasks, examples, dims\); got \(2, 10\)"
        r": add a trailing axis \(y\[\.\.\., None\]\)"),
    "(T, S) regression targets, check_tasks": (
        lambda: mj.check_tasks(regression_tasks(trailing=False)),
        r"add a trailing axis"),
    "(S,) regression targets, one task": (
        lambda: mj.check_tasks(
            jax.tree_util.tree_map(lambda a: a[0],
                                   regression_tasks(trailing=False)),
            batched=False),
        r"must be \(examples, dims\); got \(10,\)"),
    "MSE targets narrower than the model": (
        lambda: MLP_REG3.check(regression_tasks()),
        r"targets have 1 dims .* model has 3 outputs"),
    "one MLP task without task axis": (
        lambda: through_step(MLP_REG, ONE_REG_TASK),
        r"support_x has shape \(10, 1\): a batch of tasks needs a leading task"
        r" axis \(tasks, examples, dims\); for one task use x\[None\]"),
    "one Conv4 task without task axis": (
        lambda: through_step(MAML5, ONE_IMAGE_TASK),
        r"support_x has shape \(5, 8, 8, 1\): a batch of tasks needs a leading"
        r" task axis \(tasks, examples, H, W, C\); for one task use x\[None\]"),
    "one Conv4 task without task axis, ProtoNet": (
        lambda: mj.algorithms.ProtoNet(
            Conv4(None, filters=2, blocks=2)).check(ONE_IMAGE_TASK),
        r"needs a leading task axis"),
    "sinusoid num_tasks=-1": (
        lambda: sinusoid.sample_tasks(KEY, -1, 5, 5), r"num_tasks must be >= 1"),
    "sinusoid num_tasks=0": (
        lambda: sinusoid.sample_tasks(KEY, 0, 5, 5), r"num_tasks must be >= 1"),
    "sinusoid num_tasks=2.5": (
        lambda: sinusoid.sample_tasks(KEY, 2.5, 5, 5),
        r"num_tasks must be an integer"),
    "sinusoid support=0": (
        lambda: sinusoid.sample_tasks(KEY, 2, 0, 5), r"support must be >= 1"),
    "sinusoid query=-1": (
        lambda: sinusoid.sample_tasks(KEY, 2, 5, -1), r"query must be >= 1"),
    "gp num_tasks=-1": (
        lambda: gp.sample_tasks(KEY, -1), r"num_tasks must be >= 1"),
    "gp num_tasks=2.5": (
        lambda: gp.sample_tasks(KEY, 2.5), r"num_tasks must be an integer"),
    "gp num_context=0": (
        lambda: gp.sample_tasks(KEY, 2, num_context=0),
        r"num_context must be >= 1"),
    "gp num_extra=-1": (
        lambda: gp.sample_tasks(KEY, 2, num_extra=-1),
        r"num_extra must be >= 0"),
    "gp num_grid=0": (
        lambda: gp.sample_tasks(KEY, 2, testing=True, num_grid=0),
        r"num_grid must be >= 1"),
    "gp max_context=3": (
        lambda: gp.sample_tasks(KEY, 2, max_context=3),
        r"max_context must be >= 4"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_a_named_error(name):
  run, match = CASES[name]
  with pytest.raises(ValueError, match=match):
    run()


def test_good_jnp_batches_still_pass():
  """The new checks accept what they should: jnp labels in range (with and
  without ``ways``), ``(T, S, 1)`` targets, batched image tasks."""
  for learner in (MAML5, MAML_NO_WAYS):
    learner.check(image_tasks())
    learner.check(image_tasks(xp=np))
  _, metrics = through_step(MAML_NO_WAYS, image_tasks())
  assert np.isfinite(metrics["loss"])
  MLP_REG.check(regression_tasks())
  MLP_REG.check(ONE_REG_TASK, batched=False)
  MAML5.check(ONE_IMAGE_TASK, batched=False)
