"""Meta-training loop: determinism, exact resume, NaN detection."""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax as mj
from metajax import training as train
from metajax.data import sinusoid
from metajax.models import MLP

LEARNER = mj.MAML(MLP((8, 8), 1), inner_steps=2, inner_lr=0.01)
SAMPLE = lambda rng: sinusoid.sample_tasks(rng, 4, 5, 5)


def test_same_seed_identical_metrics_over_20_steps():
  runs = [train.fit(LEARNER, optax.adam(1e-3), SAMPLE, num_steps=20, seed=3,
                    steps_per_call=7, progress=False)[1] for _ in range(2)]
  for k in runs[0]:
    np.testing.assert_array_equal(runs[0][k], runs[1][k])
  other = train.fit(LEARNER, optax.adam(1e-3), SAMPLE, num_steps=20, seed=4,
                    steps_per_call=7, progress=False)[1]
  assert not np.array_equal(other["loss"], runs[0]["loss"])
  assert runs[0]["loss"].shape == (20,)


def test_resume_reproduces_uninterrupted_run(tmp_path):
  opt = optax.adam(1e-3)
  full, hist = train.fit(LEARNER, opt, SAMPLE, num_steps=30, seed=1,
                         steps_per_call=8, progress=False,
                         checkpoint_dir=tmp_path / "a", checkpoint_every=10)
  # "Crash" after 20 steps, then resume to 30 from the checkpoint.
  train.fit(LEARNER, opt, SAMPLE, num_steps=20, seed=1, steps_per_call=8,
            progress=False, checkpoint_dir=tmp_path / "b", checkpoint_every=10)
  resumed, hist_b = train.fit(LEARNER, opt, SAMPLE, num_steps=30, seed=1,
                              steps_per_call=8, progress=False,
                              checkpoint_dir=tmp_path / "b", checkpoint_every=10)
  assert int(resumed.step) == 30
  for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(hist["loss"], hist_b["loss"])
  assert not list((tmp_path / "b").glob("*.tmp"))


class _Policy:
  """Stops at the second checkpoint; records what :func:`fit` reports."""

  def __init__(self):
    self.calls = []

  def stop(self, step, seconds_per_step, steps_ahead):
    self.calls.append((step, steps_ahead))
    assert seconds_per_step > 0
    return len(self.calls) == 2


def test_deadline_stops_at_a_checkpoint_and_the_rerun_resumes(tmp_path):
  opt = optax.adam(1e-3)
  kw = dict(seed=1, steps_per_call=3, progress=False, checkpoint_every=6)
  full, hist = train.fit(LEARNER, opt, SAMPLE, num_steps=20, **kw)
  with pytest.raises(train.DeadlineReached) as stopped:
    train.fit(LEARNER, opt, SAMPLE, num_steps=20, deadline=0.0,  # long past
              checkpoint_dir=tmp_path / "a", **kw)
  assert stopped.value.step == 6  # the first interval always runs
  policy = _Policy()
  with pytest.raises(train.DeadlineReached) as stopped:
    train.fit(LEARNER, opt, SAMPLE, num_steps=20, deadline=policy,
              checkpoint_dir=tmp_path / "a", **kw)
  assert stopped.value.step == 18 and policy.calls == [(12, 6), (18, 2)]
  resumed, hist_a = train.fit(LEARNER, opt, SAMPLE, num_steps=20,
                              deadline=time.time() + 3600,
                              checkpoint_dir=tmp_path / "a", **kw)
  for a, b in zip(jax.tree_util.tree_leaves(full),
                  jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(hist["loss"], hist_a["loss"])
  with pytest.raises(ValueError, match="checkpoint_dir"):
    train.fit(LEARNER, opt, SAMPLE, num_steps=2, deadline=0.0, **kw)


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(tmp_path):
  (tmp_path / train.CHECKPOINT_NAME).write_bytes(b"\x80\x04truncated")
  with pytest.raises(ValueError, match="cannot read checkpoint"):
    train.fit(LEARNER, optax.adam(1e-3), SAMPLE, num_steps=2, progress=False,
              checkpoint_dir=tmp_path)
  train.fit(LEARNER, optax.adam(1e-3), SAMPLE, num_steps=2, progress=False,
            checkpoint_dir=tmp_path / "c", checkpoint_every=1)
  other = mj.MAML(MLP((3,), 1))
  with pytest.raises(ValueError, match="another structure"):
    train.fit(other, optax.adam(1e-3), SAMPLE, num_steps=4, progress=False,
              checkpoint_dir=tmp_path / "c")


def test_nan_loss_raises_naming_the_step():
  def bad_sample(rng):
    t = SAMPLE(rng)
    return t._replace(query_y=t.query_y * jnp.nan)
  with pytest.raises(train.NonFiniteLossError, match="at step 0"):
    train.fit(LEARNER, optax.adam(1e-3), bad_sample, num_steps=5,
              progress=False)


def test_fit_follows_maml_plus_plus_schedules():
  from metajax.algorithms import maml_plus_plus as mpp
  learner = mpp.MAMLPlusPlus(MLP((8,), 1), loss="mse", inner_steps=2,
                             inner_lr=0.01, msl_epochs=1, first_order_epochs=1,
                             iters_per_epoch=3)
  opt = optax.adam(1e-3)
  state, hist = train.fit(learner, opt, SAMPLE, num_steps=6, seed=0,
                          steps_per_call=4, progress=False)
  # The same run stepped by hand with the generic meta-step, and by the
  # learner at Python-int iterations (phase and weights fixed on the host).
  init_key, data_key = jax.random.split(jax.random.PRNGKey(0))
  example = jax.tree_util.tree_map(
      lambda a: a[0], SAMPLE(jax.random.fold_in(data_key, 0)))
  ref = mj.init_state(learner, opt, init_key, example)
  host = ref
  step = mj.make_meta_step(learner, opt)
  for i in range(6):
    tasks = SAMPLE(jax.random.fold_in(data_key, i))
    ref, _ = step(ref, tasks)
    (_, _), g = learner.meta_grad(host.params, tasks, iteration=i)
    updates, opt_state = opt.update(g, host.opt_state, host.params)
    host = mj.MetaState(optax.apply_updates(host.params, updates), opt_state,
                        host.step + 1)
  for other in (ref, host):
    for a, b in zip(jax.tree_util.tree_leaves(state.params),
                    jax.tree_util.tree_leaves(other.params)):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
  # the schedule went through both derivative orders and both loss forms
  assert learner.phase(0) == (True, True) and learner.phase(5) == (False, False)


class _RunsCodeOnLoad:
  """Unpickling this touches a file: what a pickle checkpoint could do."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    import pathlib
    return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickle_checkpoint_is_refused_without_being_loaded(tmp_path):
  import pickle
  marker = tmp_path / "code_ran"
  (tmp_path / "checkpoint.pkl").write_bytes(
      pickle.dumps(_RunsCodeOnLoad(str(marker))))
  with pytest.raises(ValueError, match="older metajax as a pickle"):
    train.fit(LEARNER, optax.adam(1e-3), SAMPLE, num_steps=2, progress=False,
              checkpoint_dir=tmp_path)
  assert not marker.exists()


def test_non_finite_update_never_reaches_a_checkpoint(tmp_path):
  # The learning rate turns infinite at step 9, just before the step-10
  # checkpoint: the loss of step 9 is still finite, its update is not.
  opt = optax.sgd(lambda s: jnp.where(s == 9, jnp.inf, 1e-3))
  with pytest.raises(train.NonFiniteLossError,
                     match="step 9: the updated parameters"):
    train.fit(LEARNER, opt, SAMPLE, num_steps=20, steps_per_call=5,
              checkpoint_every=5, progress=False, checkpoint_dir=tmp_path)
  like = mj.init_state(LEARNER, opt, jax.random.PRNGKey(0),
                       jax.tree_util.tree_map(lambda a: a[0],
                                              SAMPLE(jax.random.PRNGKey(0))))
  state, history, _ = train.load_checkpoint(tmp_path, like)
  assert int(state.step) == 5  # the last good state, not step 10's
  assert all(np.all(np.isfinite(a)) for a in jax.tree_util.tree_leaves(state))
  assert history["loss"].shape == (5,)


@pytest.mark.parametrize("kw, name", [
    (dict(steps_per_call=0), "steps_per_call"),
    (dict(checkpoint_every=-1), "checkpoint_every"),
    (dict(num_steps=-1), "num_steps"),
])
def test_bad_loop_arguments_are_named_before_any_work(kw, name):
  args = {"num_steps": 2, "progress": False, **kw}
  with pytest.raises(ValueError, match=name):
    train.fit(LEARNER, optax.adam(1e-3), SAMPLE, **args)


def test_metrics_callback_and_host_sampler_match_the_device_loop():
  rows = []
  state, hist = train.fit(LEARNER, optax.adam(1e-3), SAMPLE, num_steps=7,
                          steps_per_call=3, progress=False, seed=2,
                          on_metrics=lambda first, m: rows.append((first, m)))
  assert [first for first, _ in rows] == [0, 3, 6]
  np.testing.assert_array_equal(
      np.concatenate([m["loss"] for _, m in rows]), hist["loss"])
  # The same run with the sampler called on the host every step.
  host, host_hist = train.fit(LEARNER, optax.adam(1e-3), SAMPLE, num_steps=7,
                              steps_per_call=3, progress=False, seed=2,
                              sampler_on_device=False)
  np.testing.assert_allclose(host_hist["loss"], hist["loss"], rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(host.params),
                  jax.tree_util.tree_leaves(state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
