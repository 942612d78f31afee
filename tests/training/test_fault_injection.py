"""Crashes lose nothing and never poison a checkpoint.

A child process running :func:`metajax.training.fit` is SIGKILLed between
chunks and in the middle of a checkpoint write (after the temporary file is
written, before it is renamed over the old checkpoint); resuming from what it
left must give the parameters and history of an uninterrupted run bit for
bit. A learning rate that turns infinite at step ``k`` must leave the last
checkpoint boundary ``<= k`` as a finite checkpoint and an error naming
step ``k``, wherever ``k`` falls relative to the checkpoint interval.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax as mj
from metajax.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from metajax.training.loop import NonFiniteLossError

NUM_STEPS, EVERY = 12, 4  # as in SETUP
ROOT = Path(__file__).resolve().parents[2]

# Shared by the test process and its children, so both build the same run.
SETUP = """
import jax, optax
import metajax as mj
from metajax.data import sinusoid
from metajax.models import MLP
from metajax.training import fit

LEARNER = mj.MAML(MLP((8, 8), 1), inner_steps=2, inner_lr=0.01)

def tasks(rng):
  return sinusoid.sample_tasks(rng, 4, 5, 5)

def run(directory, optimizer=None, **kw):
  return fit(LEARNER, optimizer or optax.adam(1e-3), tasks, num_steps=12,
             seed=3, steps_per_call=2, checkpoint_every=4,
             checkpoint_dir=directory, progress=False, **kw)
"""
ns: dict = {}
exec(SETUP, ns)  # noqa: S102  (our own constant code)

CHILD = SETUP + """
import os, signal, sys
from metajax.training import checkpoint

directory, mode, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "write":  # die after the Nth temp file is written, before rename
  calls = [0]
  real_replace = checkpoint.os.replace
  def replace(src, dst):
    calls[0] += 1
    if calls[0] == n:
      os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
  checkpoint.os.replace = replace
  run(directory)
else:  # die once step n's metrics reach the host (before its checkpoint)
  def on_metrics(first, metrics):
    if first + len(metrics["loss"]) > n:
      os.kill(os.getpid(), signal.SIGKILL)
  run(directory, on_metrics=on_metrics)
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run: ``(params leaves, history)``."""
  state, history = ns["run"](tmp_path_factory.mktemp("reference"))
  return jax.tree_util.tree_leaves(jax.device_get(state.params)), history


def crash(tmp_path, mode: str, n: int) -> Path:
  script = tmp_path / "child.py"
  script.write_text(CHILD)
  directory = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
      JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, str(script), str(directory), mode,
                         str(n)], env=env, capture_output=True, timeout=120)
  assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
  return directory


def assert_same(state, history, reference):
  leaves, want = reference
  for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(state.params)),
                  leaves):
    np.testing.assert_array_equal(a, b)
  assert sorted(history) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(history[k], want[k])


@pytest.mark.parametrize("mode, n", [("step", 6), ("write", 2)])
def test_sigkill_then_resume_is_bit_identical(tmp_path, reference, mode, n):
  directory = crash(tmp_path, mode, n)
  ckpt = directory / CHECKPOINT_NAME
  assert ckpt.exists()  # the first checkpoint (step 4) survived either way
  if mode == "write":
    assert (directory / (CHECKPOINT_NAME + ".tmp")).exists()
  state, history = ns["run"](directory)
  assert int(state.step) == NUM_STEPS
  assert_same(state, history, reference)
  assert not (directory / (CHECKPOINT_NAME + ".tmp")).exists()


@pytest.mark.parametrize("k", [0, 5, EVERY * 2 - 1, EVERY * 2],
                         ids=["first", "mid_chunk", "before_ckpt", "ckpt_step"])
def test_inf_learning_rate_keeps_last_good_checkpoint(tmp_path, k):
  sgd = optax.sgd(lambda s: jnp.where(s == k, jnp.inf, 1e-3))
  with pytest.raises(NonFiniteLossError, match=f"diverged at step {k}:"):
    ns["run"](tmp_path, sgd)
  good = (k // EVERY) * EVERY
  fresh = mj.init_state(ns["LEARNER"], sgd, jax.random.PRNGKey(0), jax.tree_util
                        .tree_map(lambda a: a[0], ns["tasks"](
                            jax.random.PRNGKey(0))))
  restored = load_checkpoint(tmp_path, fresh)
  if good == 0:
    assert restored is None  # nothing good was ever reached to save
    return
  state, history, _ = restored
  assert int(state.step) == good
  assert all(np.isfinite(a).all()
             for a in jax.tree_util.tree_leaves((state.params, state.opt_state)))
  assert len(history["loss"]) == good and np.isfinite(history["loss"]).all()
