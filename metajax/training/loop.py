"""Meta-training loop: compiled chunks of meta-steps, progress, checkpoints.

:func:`fit` runs ``num_steps`` meta-steps of any :class:`~metajax.Learner`.
Tasks come from ``sample_tasks(rng) -> Task``, a jittable function called
inside the compiled step with ``rng = fold_in(data_key, step)``, so the tasks
of step ``i`` depend only on the seed and ``i``: a run that is interrupted and
resumed from a checkpoint sees exactly the tasks, and produces exactly the
numbers, of an uninterrupted one.

Every learner trains through the one :func:`~metajax.make_meta_step`; its
schedules (MAML++) follow ``state.step``, which the checkpoint restores, so a
resumed run continues them exactly.

A sampler that cannot be traced (host-side data pipelines, or task shapes
that change from step to step) runs with ``sampler_on_device=False``: one
host call per step, each new task shape compiled once. (Variable sizes are
better padded to a fixed shape, as the GP sampler does, so the run compiles
once.) Repeated calls with the same learner, optimiser, sampler and seed
(training in rounds, as early stopping does) reuse the compiled step.

``steps_per_call`` meta-steps run inside one ``lax.scan`` per host call (few
dispatches for tiny models such as the sinusoid MLP); after each call the
loop checks every step's loss and updated state for NaN/inf (the error names
the first bad step, and nothing non-finite is ever checkpointed), hands the
per-step metrics to ``on_metrics``, updates the progress bar and, every
``checkpoint_every`` steps, writes a checkpoint atomically
(:mod:`metajax.training.checkpoint`).
"""
from __future__ import annotations

import functools
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax.core import sharding as sharding_lib
from metajax.core.learner import Learner, MetaState, init_state, make_meta_step
from metajax.core.tasks import Task
from metajax.training.checkpoint import load_checkpoint, save_checkpoint

class NonFiniteLossError(FloatingPointError):
  """The meta-training loss or state became NaN or infinite."""


class DeadlineReached(Exception):
  """:func:`fit` stopped at a checkpoint because its ``deadline`` would pass
  during the next checkpoint interval; rerunning resumes from ``step``.

  Attributes:
    step: the meta-step of the checkpoint written last.
    seconds_per_step: wall time per step over the last interval.
  """

  def __init__(self, step: int, seconds_per_step: float):
    super().__init__(f"stopped at the checkpoint of step {step} to keep the "
                     f"deadline ({seconds_per_step:.3g} s per step)")
    self.step = step
    self.seconds_per_step = seconds_per_step


MetricsCallback = Callable[[int, dict], None]


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _check_positive(**values):
  for name, v in values.items():
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
      raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _compiled(learner, optimizer, sample_tasks, seed, task_map, chunk_size,
              devices):
  """``(device_chunk, host_step)``: the jitted chunk of meta-steps (tasks
  sampled inside) and the jitted single step, cached per (hashable)
  arguments so that repeated :func:`fit` calls on one run (training in
  rounds, as early stopping does) compile once."""
  try:
    return _compiled_cached(learner, optimizer, sample_tasks, seed, task_map,
                            chunk_size, devices)
  except TypeError:  # unhashable arguments: build afresh
    return _compiled_cached.__wrapped__(learner, optimizer, sample_tasks,
                                        seed, task_map, chunk_size, devices)


@functools.lru_cache(maxsize=4)
def _compiled_cached(learner, optimizer, sample_tasks, seed, task_map,
                     chunk_size, devices):
  data_key = jax.random.split(jax.random.PRNGKey(seed))[1]
  step = make_meta_step(learner, optimizer, task_map=task_map,
                        chunk_size=chunk_size, check=False,
                        devices=devices).jitted

  def checked_step(state, tasks):
    state, metrics = step(state, tasks)
    metrics = dict(metrics)
    metrics["_state_finite"] = _all_finite(
        (state.params, state.opt_state, state.model_state))
    return state, metrics

  def device_chunk(state, n):
    def body(state, _):
      return checked_step(
          state, sample_tasks(jax.random.fold_in(data_key, state.step)))
    return jax.lax.scan(body, state, None, length=n)

  return jax.jit(device_chunk, static_argnums=1), jax.jit(checked_step)


def _should_stop(deadline, step: int, per_step: float, ahead: int) -> bool:
  if hasattr(deadline, "stop"):
    return bool(deadline.stop(step, per_step, ahead))
  return time.time() + per_step * ahead > deadline


def fit(learner: Learner,
        optimizer: optax.GradientTransformation,
        sample_tasks: Callable[[jax.Array], Task],
        *,
        num_steps: int,
        seed: int = 0,
        steps_per_call: int = 100,
        task_map: str = "vmap",
        chunk_size: int | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 1000,
        progress: bool = True,
        desc: str = "meta-train",
        state: MetaState | None = None,
        on_metrics: MetricsCallback | None = None,
        sampler_on_device: bool = True,
        deadline=None,
        devices=None) -> tuple[MetaState, dict]:
  """Meta-trains ``learner`` for ``num_steps`` steps.

  Args:
    learner: any learner.
    optimizer: outer optax optimiser.
    sample_tasks: ``rng -> Task`` batch (leading task axis); jittable unless
      ``sampler_on_device=False``.
    num_steps: total meta-steps (a resumed run continues up to this count).
    seed: seeds initialisation (``PRNGKey(seed)`` split) and task sampling.
    steps_per_call: meta-steps compiled into one host call (per-step host
      calls with ``sampler_on_device=False``; the checks and callbacks still
      run every ``steps_per_call`` steps).
    task_map, chunk_size: see :func:`~metajax.make_meta_step`.
    checkpoint_dir: if given, resume from its checkpoint when present and
      write one every ``checkpoint_every`` steps and at the end.
    checkpoint_every: steps between checkpoints.
    progress: show a tqdm progress bar.
    desc: the progress bar's label.
    state: start from this state instead of a fresh initialisation.
    on_metrics: called after every host call as ``on_metrics(first_step,
      metrics)``, ``metrics`` mapping each name to a NumPy array of per-step
      values for steps ``first_step, first_step + 1, ...`` (e.g. a
      :class:`metajax.experiment.metrics_log.MetricsLog`).
    sampler_on_device: whether ``sample_tasks`` is traced into the compiled
      chunk (fast) or called on the host every step.
    deadline: a ``time.time()`` by which to stop (needs ``checkpoint_dir``):
      after each checkpoint, if the next interval, timed like the last one,
      would end after it, :class:`DeadlineReached` is raised. The run stops
      only at checkpoints, so a rerun resumes it exactly; the first interval
      of a call always runs. Or a policy: any object with
      ``stop(step, seconds_per_step, steps_ahead) -> bool``, asked after each
      checkpoint (e.g. ``experiments.accelerator``'s, which also stops a
      run that will not fit its budget).
    devices: shard every task batch over these devices (see
      :func:`~metajax.make_meta_step`; ``None``: one device). The meta-batch
      must be a multiple of their number; the history and checkpoints are
      the same as on one device to float tolerance.

  Returns:
    ``(state, history)``; ``history`` maps each metric name to an array of
    per-step values (length ``num_steps``).

  Raises:
    ValueError: a non-positive ``steps_per_call``/``checkpoint_every``, a
      negative ``num_steps``, or a bad first task batch (before any work).
    NonFiniteLossError: naming the first step whose loss or updated
      parameters/optimiser state are NaN or inf; the last checkpoint written
      is the last good one.
    DeadlineReached: see ``deadline``.
  """
  _check_positive(steps_per_call=steps_per_call,
                  checkpoint_every=checkpoint_every)
  if deadline is not None and checkpoint_dir is None:
    raise ValueError("a deadline needs a checkpoint_dir: the run stops at a "
                     "checkpoint so that it can resume")
  if not isinstance(num_steps, (int, np.integer)) or num_steps < 0:
    raise ValueError(f"num_steps must be a non-negative integer, got {num_steps!r}")
  init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
  example = sample_tasks(jax.random.fold_in(data_key, 0))
  learner.check(example)
  mesh = sharding_lib.task_mesh(devices)
  sharding_lib.check_divisible(example.num_tasks, mesh)
  if state is None:
    state = init_state(learner, optimizer, init_key,
                       jax.tree_util.tree_map(lambda a: a[0], example))
  history: dict[str, list] = {}
  done = int(state.step)
  if checkpoint_dir is not None:
    restored = load_checkpoint(checkpoint_dir, state)
    if restored is not None:
      state, hist, _ = restored
      history = {k: [v] for k, v in hist.items()}
      done = int(state.step)

  if mesh is not None:
    # Replicated over the mesh up front: in a multi-process run a jitted
    # program takes only global arrays.
    state = jax.device_put(state, sharding_lib.replicated(mesh))

  device_chunk, host_step = _compiled(
      learner, optimizer, sample_tasks, seed, task_map, chunk_size,
      tuple(devices) if isinstance(devices, list) else devices)
  if sampler_on_device:
    run_chunk = device_chunk
  else:
    def run_chunk(state, n):
      rows = []
      for i in range(n):
        tasks = sample_tasks(jax.random.fold_in(data_key, done + i))
        learner.check(tasks)
        state, m = host_step(state, tasks)
        rows.append(m)
      return state, jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *rows)

  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=num_steps, initial=done, desc=desc, dynamic_ncols=True)
  next_ckpt = (done // checkpoint_every + 1) * checkpoint_every
  # Time per step for a deadline, without the call's first chunk (which
  # compiles) unless it is all there is.
  interval_start, interval_steps, first_chunk = time.perf_counter(), 0, True
  try:
    while done < num_steps:
      # Chunks end on checkpoint boundaries so a resume reproduces them.
      n = min(steps_per_call, num_steps - done)
      if checkpoint_dir is not None:
        n = min(n, next_ckpt - done)
      new_state, metrics = run_chunk(state, n)
      metrics = jax.device_get(metrics)
      state_ok = np.asarray(metrics.pop("_state_finite"))
      loss = np.asarray(metrics["loss"])
      bad = ~(np.isfinite(loss) & state_ok)
      if bad.any():
        i = int(np.argmax(bad))
        what = (f"the loss is {loss[i]}" if not np.isfinite(loss[i]) else
                "the updated parameters or optimiser state are not finite "
                f"(loss {loss[i]:.6g})")
        raise NonFiniteLossError(
            f"meta-training diverged at step {done + i}: {what}; lower the "
            "learning rates, check the data for NaNs, or use first-order "
            "meta-gradients" + (
                "; the last checkpoint is the last good state"
                if checkpoint_dir is not None else ""))
      state = new_state
      for k, v in metrics.items():
        history.setdefault(k, []).append(np.asarray(v))
      if on_metrics is not None:
        on_metrics(done, {k: np.asarray(v) for k, v in metrics.items()})
      done += n
      interval_steps += n
      if first_chunk and done < min(next_ckpt, num_steps):
        interval_start, interval_steps = time.perf_counter(), 0
      first_chunk = False
      if bar is not None:
        bar.update(n)
        bar.set_postfix({k: f"{float(np.mean(v)):.4g}"
                         for k, v in metrics.items()})
      if checkpoint_dir is not None and (done >= next_ckpt or done == num_steps):
        save_checkpoint(checkpoint_dir, state,
                        {k: np.concatenate(v) for k, v in history.items()})
        next_ckpt += checkpoint_every
        if deadline is not None and done < num_steps:
          now = time.perf_counter()
          per_step = (now - interval_start) / interval_steps
          if _should_stop(deadline, done, per_step,
                          min(next_ckpt, num_steps) - done):
            raise DeadlineReached(done, per_step)
          interval_start, interval_steps = now, 0
  finally:
    if bar is not None:
      bar.close()
  if mesh is not None:
    # Back on the default device: evaluation of a replicated state would run
    # once per device.
    state = jax.device_put(jax.device_get(state))
  return state, {k: np.concatenate(v) for k, v in history.items()}
