"""Meta-training loop: compiled chunks of meta-steps, progress, checkpoints.

:func:`fit` runs ``num_steps`` meta-steps of any :class:`~metajax.Learner`.
Tasks come from ``sample_tasks(rng) -> Task``, a jittable function called
inside the compiled step with ``rng = fold_in(data_key, step)``, so the tasks
of step ``i`` depend only on the seed and ``i``: a run that is interrupted and
resumed from a checkpoint sees exactly the tasks, and produces exactly the
numbers, of an uninterrupted one.

MAML++ trains with :func:`metajax.algorithms.maml_plus_plus.make_meta_step`, whose
annealing schedules follow the step count.

``steps_per_call`` meta-steps run inside one ``lax.scan`` per host call (few
dispatches for tiny models such as the sinusoid MLP); after each call the
loop checks the losses for NaN/inf, updates the progress bar and, every
``checkpoint_every`` steps, writes a checkpoint atomically (a temporary file
renamed over the old one, so a crash never leaves a half-written file).
"""
from __future__ import annotations

import os
import pathlib
import pickle
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax.core.learner import Learner, MetaState, init_state, make_meta_step
from metajax.core.tasks import Task
from metajax.training.checkpoint import load_checkpoint, save_checkpoint

class NonFiniteLossError(FloatingPointError):
  """The meta-training loss became NaN or infinite."""


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
        state: MetaState | None = None) -> tuple[MetaState, dict]:
  """Meta-trains ``learner`` for ``num_steps`` steps.

  Args:
    learner: any learner.
    optimizer: outer optax optimiser.
    sample_tasks: ``rng -> Task`` batch (leading task axis), jittable.
    num_steps: total meta-steps (a resumed run continues up to this count).
    seed: seeds initialisation (``PRNGKey(seed)`` split) and task sampling.
    steps_per_call: meta-steps compiled into one host call.
    task_map, chunk_size: see :func:`~metajax.make_meta_step`.
    checkpoint_dir: if given, resume from its checkpoint when present and
      write one every ``checkpoint_every`` steps and at the end.
    progress: show a tqdm progress bar.
    state: start from this state instead of a fresh initialisation.

  Returns:
    ``(state, history)``; ``history`` maps each metric name to an array of
    per-step values (length ``num_steps``).

  Raises:
    NonFiniteLossError: naming the first step whose loss is NaN or inf.
  """
  init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
  example = sample_tasks(jax.random.fold_in(data_key, 0))
  learner.check(example)
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

  from metajax.algorithms import maml_plus_plus
  factory = (maml_plus_plus.make_meta_step
             if isinstance(learner, maml_plus_plus.MAMLPlusPlus)
             else make_meta_step)
  step = factory(learner, optimizer, task_map=task_map, chunk_size=chunk_size,
                 check=False).jitted

  def run_chunk(state, n):
    def body(state, _):
      tasks = sample_tasks(jax.random.fold_in(data_key, state.step))
      return step(state, tasks)
    return jax.lax.scan(body, state, None, length=n)

  run_chunk = jax.jit(run_chunk, static_argnums=1)

  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=num_steps, initial=done, desc=desc, dynamic_ncols=True)
  next_ckpt = (done // checkpoint_every + 1) * checkpoint_every
  while done < num_steps:
    # Chunks end on checkpoint boundaries so a resume reproduces them.
    n = min(steps_per_call, num_steps - done)
    if checkpoint_dir is not None:
      n = min(n, next_ckpt - done)
    state, metrics = run_chunk(state, n)
    metrics = jax.device_get(metrics)
    bad = ~np.isfinite(metrics["loss"])
    if bad.any():
      first = done + int(np.argmax(bad))
      raise NonFiniteLossError(
          f"meta-training loss is {metrics['loss'][np.argmax(bad)]} at step "
          f"{first}; lower the learning rates, check the data for NaNs, or "
          "use first-order meta-gradients")
    for k, v in metrics.items():
      history.setdefault(k, []).append(np.asarray(v))
    done += n
    if bar is not None:
      bar.update(n)
      bar.set_postfix({k: f"{float(np.mean(v)):.4g}" for k, v in metrics.items()})
    if checkpoint_dir is not None and (done >= next_ckpt or done == num_steps):
      save_checkpoint(checkpoint_dir, state,
                      {k: np.concatenate(v) for k, v in history.items()})
      next_ckpt += checkpoint_every
  if bar is not None:
    bar.close()
  return state, {k: np.concatenate(v) for k, v in history.items()}
