"""Training and evaluation of one learner on few-shot Omniglot.

:func:`train_and_evaluate` loads the class split, meta-trains through
:func:`metajax.training.fit` on N-way K-shot episodes sampled on device
(checkpoints in ``<workdir>/checkpoints/<method>``, so a rerun resumes;
per-step metrics under ``<method>/train`` in ``<workdir>/metrics.jsonl``),
tests on ``eval_tasks`` episodes of the test classes drawn from
``eval_seed`` through :func:`metajax.evaluation.evaluate` (the same tasks
for every method, so accuracies are paired) and writes ``results.json``.
:func:`table` puts the results of many runs side by side, :func:`seed_table`
the seeds of one configuration.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from experiments.omniglot import configs
from metajax import configs as paper_configs
from metajax import evaluation, training
from metajax.core import MetaState
from metajax.data import datadir, omniglot, sampler, splits
from metajax.evaluation import meta_gradients
from metajax.experiment import config as config_lib
from metajax.experiment import metrics_log, record
from metajax.experiment import workdir as workdir_lib


def load_split(cfg: configs.Config, data_dir, cache_dir=None):
  """The Omniglot classes at ``cfg.image_size`` (resized with
  ``cfg.resize``), split by ``cfg.split``."""
  data = omniglot.load_omniglot(data_dir, size=cfg.image_size,
                                method=cfg.resize, cache_dir=cache_dir)
  return splits.split_omniglot(data, cfg.split, data_dir=data_dir)


def training_classes(split, which: str):
  """The split's training classes, or training and validation together."""
  if which == "train":
    return split.train
  return omniglot.concat([split.train, split.val])


def outer_optimizer(cfg: configs.Config, learner, paper
                    ) -> tuple[optax.GradientTransformation, dict]:
  """``(optimiser, its description)``: Adam(``meta_lr``), or Reptile's own.

  Reptile's meta step anneals linearly from the paper's ``meta_step`` to
  ``meta_step_final`` over ``anneal_iterations`` (the paper's 100,000 in
  its named configs), or over this run's ``iterations`` when that is
  ``None``, so a short run ends its schedule as the paper's does. Adam's
  rate is multiplied by ``lr_decay`` every ``lr_decay_every`` steps when
  set (a staircase, as PyTorch's ``StepLR``).
  """
  if cfg.method == "reptile":
    o = paper.outer
    kw = dict(meta_step=o["meta_step"], meta_step_final=o["meta_step_final"],
              meta_iters=cfg.anneal_iterations or cfg.iterations)
    return learner.outer_optimizer(**kw), {"name": "reptile_sgd", **kw}
  info = {"name": "adam", "meta_lr": cfg.meta_lr, "eps": cfg.adam_eps}
  lr = cfg.meta_lr
  if cfg.lr_decay_every is not None:
    lr = optax.exponential_decay(cfg.meta_lr, cfg.lr_decay_every,
                                 cfg.lr_decay, staircase=True)
    info.update(lr_decay=cfg.lr_decay, lr_decay_every=cfg.lr_decay_every)
  return optax.adam(lr, eps=cfg.adam_eps), info


def describe(learner) -> dict:
  """The learner's settings as JSON-friendly strings and numbers."""
  out = {"class": type(learner).__name__}
  if dataclasses.is_dataclass(learner):
    for f in dataclasses.fields(learner):
      v = getattr(learner, f.name)
      out[f.name] = (v if isinstance(v, (int, float, str, bool, type(None)))
                     else repr(v)[:200])
  return out


#: the fixed batch of training tasks the meta-gradient directions are
#: compared on: the training sampler at ``PRNGKey(PROBE_SEED)``.
PROBE_SEED = 20_171_003
COMPARISON_NAME = "grad_compare.json"
#: the metrics-log split of the comparisons made during training.
GRAD_COMPARE_SPLIT = "grad_compare"


def _state_and_sampler(cfg, learner, optimizer, split, workdir):
  """The run's latest checkpointed state (or its initialisation, untouched
  on disk) and its training sampler."""
  ways, shots, queries = cfg.episodes(train=True)
  train_sampler = sampler.EpisodeSampler(
      training_classes(split, cfg.train_classes), ways=ways, shots=shots,
      queries=queries, num_tasks=cfg.meta_batch, rotation=cfg.rotation)
  state, _ = training.fit(
      learner, optimizer, train_sampler, num_steps=0, seed=cfg.seed,
      checkpoint_dir=workdir_lib.checkpoint_dir(workdir) / cfg.method,
      progress=False)
  return state, train_sampler


def compare_gradients(config: configs.Config, workdir, *, data_dir=None,
                      cache_dir=None) -> dict:
  """Exact, first-order, implicit and Reptile meta-gradient directions of
  ``config``'s learner (MAML-style methods) at the run's latest checkpoint,
  or its initialisation, on one meta-batch of training tasks (see
  :mod:`metajax.evaluation.meta_gradients`); prints the table and writes
  ``<workdir>/grad_compare.json``. Trains nothing."""
  started = time.time()
  cfg = config
  data_dir = datadir.resolve_data_dir(data_dir, dataset="omniglot")
  split = load_split(cfg, data_dir, cache_dir)
  learner = configs.build_learner(cfg)
  paper = paper_configs.get(cfg.method, cfg.setting)
  optimizer, _ = outer_optimizer(cfg, learner, paper)
  state, train_sampler = _state_and_sampler(cfg, learner, optimizer, split,
                                            workdir)
  probe = train_sampler(jax.random.PRNGKey(PROBE_SEED))
  comparison = meta_gradients.compare_meta_gradients(
      learner, state.params, probe, task_map=cfg.task_map,
      chunk_size=cfg.chunk_size)
  out = {"step": int(state.step), "probe_seed": PROBE_SEED,
         "tasks": cfg.meta_batch, "config": config_lib.to_dict(cfg),
         "comparison": comparison.to_dict(),
         "run": record.run_info(seed=cfg.seed, started=started,
                                finished=time.time())}
  out = workdir_lib.jsonable(out)
  workdir_lib.write_json_atomic(pathlib.Path(workdir) / COMPARISON_NAME, out)
  print(f"{cfg.method} {cfg.ways}-way {cfg.shots}-shot, meta-step "
        f"{out['step']}, {cfg.meta_batch} training tasks:")
  print(comparison.table())
  return out


def train_and_evaluate(config: configs.Config, workdir, *, data_dir=None,
                       progress: bool = True, cache_dir=None,
                       compare_grads: bool = False,
                       deadline=None, devices=None) -> dict:
  """Meta-trains ``config.method``, tests it and writes ``results.json``.

  Args:
    config: a validated :class:`configs.Config`.
    workdir: the prepared run folder (see :mod:`metajax.experiment.workdir`).
    data_dir: the data root holding ``omniglot/`` and ``splits/``; ``None``:
      ``$METAJAX_DATA_DIR``.
    progress: show a progress bar.
    cache_dir: where decoded images are cached (``None``: the default, see
      :mod:`metajax.data.datadir`).
    compare_grads: instead of training, compare the meta-gradient
      directions at the run's latest state (:func:`compare_gradients`).
    deadline: a ``time.time()`` (or a policy, see :func:`metajax.fit`) by
      which training stops at a checkpoint
      (:class:`metajax.training.DeadlineReached` is raised, nothing is
      tested, and rerunning resumes); ``None``: train to the end.
    devices: shard each meta-batch over these devices (see
      :func:`metajax.fit`; ``None``: one device).

  Returns:
    The dict written to ``results.json`` (with ``compare_grads``, to
    ``grad_compare.json``).
  """
  if compare_grads:
    return compare_gradients(config, workdir, data_dir=data_dir,
                             cache_dir=cache_dir)
  started = time.time()
  workdir = pathlib.Path(workdir)
  cfg = config
  data_dir = datadir.resolve_data_dir(data_dir, dataset="omniglot")
  split = load_split(cfg, data_dir, cache_dir)
  ways, shots, queries = cfg.episodes(train=True)

  def episode_sampler(classes):
    return sampler.EpisodeSampler(
        classes, ways=ways, shots=shots, queries=queries,
        num_tasks=cfg.meta_batch, rotation=cfg.rotation)

  def pretrain_sampler(classes):
    return sampler.ClassBatchSampler(classes, batch_size=cfg.pretrain_batch,
                                     rotation=cfg.rotation)

  train_sampler = (pretrain_sampler if cfg.method in configs.TRANSFER_METHODS
                   else episode_sampler)

  def episodes(classes):
    return sampler.EpisodeSampler(
        classes, ways=cfg.ways, shots=cfg.shots, queries=cfg.queries,
        rotation=cfg.eval_rotation or cfg.rotation)

  test_sampler = episodes(split.test)
  paper = paper_configs.get(cfg.method, cfg.setting)
  base = training_classes(split, cfg.train_classes)
  base_classes = (pretrain_sampler(base).num_labels
                  if cfg.method in configs.PRETRAIN_METHODS else None)
  learner = configs.build_learner(cfg, base_classes=base_classes)
  optimizer, optimizer_info = outer_optimizer(cfg, learner, paper)
  checkpoints = workdir_lib.checkpoint_dir(workdir) / cfg.method
  t0 = time.time()
  with metrics_log.MetricsLog(workdir) as log:
    run = _Training(cfg, learner, optimizer, log, progress=progress,
                    deadline=deadline, devices=devices)
    pretraining, initial = None, None
    if cfg.method == configs.META_BASELINE:
      pretraining, initial = pretrain_meta_baseline(
          cfg, learner, optimizer, pretrain_sampler(base), checkpoints, log,
          progress=progress, deadline=deadline, devices=devices)
      run.initial = initial
    comparisons = None
    if cfg.grad_compare_every is not None:
      state, hist, metrics, comparisons = run.fit_comparing(
          train_sampler(training_classes(split, cfg.train_classes)),
          checkpoints)
      validation = None
    elif cfg.val_every is None:
      state, hist, metrics = run.fit(
          train_sampler(training_classes(split, cfg.train_classes)),
          cfg.iterations, checkpoints, cfg.method)
      validation = None
    else:
      state, hist, metrics, validation = run.fit_early_stopping(
          train_sampler(training_classes(split, cfg.train_classes)),
          episodes(split.val), checkpoints)
      if cfg.retrain_trainval:
        # ProtoNets' run_trainval.py: a fresh model on train + validation
        # classes for the best validated number of steps.
        state, hist, metrics = run.fit(
            train_sampler(training_classes(split, "trainval")),
            validation["best_step"], checkpoints / "trainval",
            f"{cfg.method}_trainval")
        validation["retrained_on"] = "trainval"
        validation["retrained_steps"] = validation["best_step"]
  train_s = time.time() - t0
  t0 = time.time()
  feature_mean = None
  if cfg.method in configs.TRANSFER_METHODS and learner.head == "simpleshot":
    # SimpleShot centres on the base classes' mean feature, taken with the
    # evaluation-mode network over every training image (and rotation).
    learner = learner.with_feature_mean(base_feature_mean(
        learner, state.params, state.model_state, base, cfg.rotation))
    feature_mean = {"images": int(base.images.shape[0] * base.images.shape[1]
                                  * (4 if cfg.rotation == "classes" else 1)),
                    "seconds": round(time.time() - t0, 1)}
  result = evaluation.evaluate(
      learner, state.params, test_sampler, num_tasks=cfg.eval_tasks,
      seed=cfg.eval_seed, steps=cfg.eval_steps, batch_size=cfg.eval_batch,
      model_state=state.model_state)
  eval_s = time.time() - t0
  n = len(hist["loss"])
  window = max(1, n // 10)
  train = {
      "iterations": n,
      "resumed_from_step": (n if metrics.resumed_from is None
                            else metrics.resumed_from),
      "steps_trained": metrics.steps_run,
      "seconds": round(train_s, 1),
      "checkpoint": f"{workdir_lib.CHECKPOINTS}/{cfg.method}",
      "metrics_split": metrics.split,
      "loss_first": float(np.mean(hist["loss"][:window])),
      "loss_last": float(np.mean(hist["loss"][-window:])),
      "extensions": workdir_lib.read_extensions(workdir),
  }
  for k in ("accuracy", "pre_accuracy"):
    if k in hist:
      train[f"{k}_last"] = float(np.mean(hist[k][-window:]))
  iterations_paper = configs.paper_iterations(paper)
  results = {
      "experiment": "omniglot",
      "method": cfg.method,
      "budget": run_budget(cfg, iterations_paper, validation, paper.outer),
      "paper_iterations": iterations_paper,
      "config": config_lib.to_dict(cfg),
      "paper_setting": {"name": cfg.setting, "learner": paper.learner,
                        "outer": paper.outer, "source": paper.source,
                        "note": paper.note},
      "learner": describe(learner),
      "outer_optimizer": optimizer_info,
      "protocol": {
          "split": cfg.split, "rotation": cfg.rotation,
          "train_classes": int(split.train.images.shape[0]),
          "test_classes": int(split.test.images.shape[0]),
          "train_classes_used": cfg.train_classes,
          "train_sampler": train_sampler(split.train).config(),
          "pretraining": pretraining,
          "simpleshot_feature_mean": feature_mean,
          "test_sampler": test_sampler.config(),
          "backbone": {"name": "conv4", "filters": cfg.filters,
                       "blocks": cfg.blocks, "downsample": cfg.downsample,
                       "features": cfg.features, "init": cfg.conv_init,
                       "head": cfg.method in configs.HEAD_METHODS,
                       "compute_dtype": cfg.compute_dtype},
          "batch_norm": cfg.norm,
          "batch_norm_policy": cfg.batch_norm_policy,
          "eval_query_context": cfg.eval_query_context,
      },
      "train": train,
      "validation": validation,
      "grad_compare": comparisons,
      "published": published_for(paper, cfg.batch_norm_policy),
      "test": result.to_dict(),
      "eval_seconds": round(eval_s, 1),
      "run": record.run_info(seed=cfg.seed, started=started,
                             finished=time.time(), devices=devices),
  }
  results = workdir_lib.jsonable(results)  # returned as written
  path = workdir_lib.write_results(workdir, results)
  t = results["test"]
  print(f"{cfg.method}: {cfg.ways}-way {cfg.shots}-shot test {t['metric']} "
        f"{100 * t['mean']:.2f} ± {100 * t['ci95']:.2f} % over "
        f"{t['num_tasks']} tasks ({results['budget']} budget)")
  print(f"wrote {path}")
  return results


def base_feature_mean(learner, params, model_state, classes,
                      rotation: str) -> jax.Array:
  """SimpleShot's ``train_mean``: the mean evaluation-mode feature over every
  image of ``classes`` (floats in [0, 1]), and over its other three quarter
  turns when ``rotation='classes'`` (each turn is a base class of its
  own; every turn has the same count, so the mean of the four means)."""
  images = np.asarray(classes.images)
  flat = np.asarray(sampler.to_float(
      images.reshape((-1,) + images.shape[2:])))
  evaluator = learner.with_model_state(model_state)
  turns = range(4) if rotation == "classes" else range(1)
  return sum(evaluator.feature_mean_of(params, np.rot90(flat, k, axes=(1, 2)))
             for k in turns) / len(turns)


def pretrain_meta_baseline(cfg, learner, optimizer, pretrain_sampler,
                           checkpoints, log, *, progress, deadline, devices):
  """Meta-Baseline's first stage: Baseline's pretraining for
  ``pretrain_iterations`` steps (checkpoints in ``<checkpoints>/pretrain``,
  metrics under ``<method>_pretrain/train``). Returns ``(record, initial
  meta-state)``: the meta stage starts from the pretrained backbone and
  running statistics, a fresh temperature and optimiser state."""
  pre = configs.pretrain_learner(cfg, pretrain_sampler.num_labels)
  steps = cfg.pretrain_iterations or cfg.iterations
  run = _Training(cfg, pre, optax.adam(cfg.meta_lr, eps=cfg.adam_eps), log,
                  progress=progress, deadline=deadline, devices=devices)
  t0 = time.time()
  state, hist, _ = run.fit(pretrain_sampler, steps, checkpoints / "pretrain",
                           f"{cfg.method}_pretrain")
  params = learner.from_pretrained(state.params)
  initial = MetaState(params, optimizer.init(params),
                      jnp.zeros((), jnp.int32), state.model_state)
  n = len(hist["loss"])
  window = max(1, n // 10)
  record_ = {"iterations": steps, "sampler": pretrain_sampler.config(),
             "optimizer": {"name": "adam", "lr": cfg.meta_lr},
             "learner": describe(pre), "seconds": round(time.time() - t0, 1),
             "loss_first": float(np.mean(hist["loss"][:window])),
             "loss_last": float(np.mean(hist["loss"][-window:])),
             "checkpoint": f"{workdir_lib.CHECKPOINTS}/{cfg.method}/pretrain"}
  return record_, initial


def published_for(paper, policy: str) -> dict | None:
  """The paper's published number for this batch-norm policy, if any."""
  for p in getattr(paper, "published", ()) or ():
    if p.matches(policy):
      return p.to_dict()
  return None


def run_budget(cfg: configs.Config, paper_iterations: int | None,
               validation: dict | None, outer) -> str:
  """``'full'`` or ``'shortened'``.

  A run that validates is full when early stopping ended it (the papers'
  budget is "until validation stops improving") after at least the paper's
  patience, counted in meta-steps (``patience`` x ``episodes_per_epoch``);
  otherwise full means at least the paper's iterations.
  """
  if validation is not None:
    paper_patience = outer.get("patience")
    if paper_patience is None or not validation["stopped_early"]:
      return common.SHORTENED
    steps = paper_patience * outer.get("episodes_per_epoch", 1)
    return (common.FULL if cfg.patience * cfg.val_every >= steps
            else common.SHORTENED)
  if paper_iterations is None:
    return common.SHORTENED
  return common.budget(cfg.iterations, paper_iterations)


class _Training:
  """Meta-training of one config: plain, or with early stopping."""

  def __init__(self, cfg, learner, optimizer, log, *, progress: bool,
               deadline=None, devices=None):
    self.cfg, self.learner, self.optimizer, self.log = (cfg, learner,
                                                        optimizer, log)
    self.progress, self.deadline, self.devices = progress, deadline, devices
    # where a fresh run starts (Meta-Baseline: the pretrained backbone);
    # None: the learner's own initialisation
    self.initial = None

  def fit(self, train_sampler, num_steps, checkpoint_dir, name,
          metrics=None, state=None):
    """``(state, history, metrics callback)`` after ``num_steps``
    (continuing from ``state``, or from the checkpoint, or afresh)."""
    cfg = self.cfg
    metrics = metrics or common.ModelMetrics(self.log, name)
    if state is None:
      state = self.initial
    state, hist = training.fit(
        self.learner, self.optimizer, train_sampler, num_steps=num_steps,
        seed=cfg.seed, steps_per_call=cfg.steps_per_call,
        task_map=cfg.task_map, chunk_size=cfg.chunk_size,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=cfg.checkpoint_every, progress=self.progress,
        desc=name, on_metrics=metrics, state=state, deadline=self.deadline,
        devices=self.devices)
    return state, hist, metrics

  def fit_comparing(self, train_sampler, checkpoint_dir):
    """Trains in rounds of ``grad_compare_every`` steps, comparing the
    meta-gradient directions on the fixed probe batch (the training sampler
    at ``PRNGKey(PROBE_SEED)``) at the start of training, after each round
    and at the end. Each comparison is a row of split ``grad_compare`` in
    the metrics log (``<direction>/<quantity>/<tensor>``); a resumed run
    recomputes the comparison at its checkpoint's step. Returns
    ``(state, history, metrics callback, summary)``, the summary holding the
    steps and each direction's overall cosine and relative difference."""
    cfg = self.cfg
    probe = train_sampler(jax.random.PRNGKey(PROBE_SEED))
    metrics = common.ModelMetrics(self.log, cfg.method)
    summary = {"every": cfg.grad_compare_every, "probe_seed": PROBE_SEED,
               "tasks": cfg.meta_batch, "steps": [], "cosine": {},
               "relative_difference": {}, "seconds": {}, "peak_bytes": {},
               "skipped": {}}
    state, target, first = None, 0, True
    while True:
      state, hist, metrics = self.fit(train_sampler, target, checkpoint_dir,
                                      cfg.method, metrics, state)
      step = int(state.step)
      if first:  # rows a previous process logged from here on are redone
        self.log.truncate_after(step, split=GRAD_COMPARE_SPLIT)
        first = False
      c = meta_gradients.compare_meta_gradients(
          self.learner, state.params, probe, task_map=cfg.task_map,
          chunk_size=cfg.chunk_size, repeats=1)
      self.log.write(step, c.flat(), prefix=GRAD_COMPARE_SPLIT)
      if step >= cfg.iterations:
        self.log.flush()
        rows = metrics_log.read_metrics(self.log.path.parent,
                                        split=GRAD_COMPARE_SPLIT)
        summary["steps"] = [r["step"] for r in rows]
        for d in c.directions:
          for q in ("cosine", "relative_difference"):
            summary[q][d] = [r.get(f"{d}/{q}/{meta_gradients.ALL}")
                             for r in rows]
          summary["seconds"][d] = c.seconds[d]
          summary["peak_bytes"][d] = c.peak_bytes[d]
        summary["skipped"] = c.skipped
        return state, hist, metrics, summary
      every = cfg.grad_compare_every
      target = min(cfg.iterations, (step // every + 1) * every)

  def fit_early_stopping(self, train_sampler, val_sampler, checkpoint_dir):
    """Trains in rounds of ``val_every`` steps, validating after each.

    Validation is the mean query loss over ``val_tasks`` episodes of the
    validation classes (ProtoNets' criterion), the same or new ones each
    round (``val_episodes``, :func:`validation_seed`); the best round's
    state is checkpointed in ``<checkpoint_dir>/best`` and returned. Stops
    after ``patience`` rounds without improvement or at ``iterations``. The
    validation history is kept in ``<checkpoint_dir>/validation.json``, so
    an interrupted run resumes with it.
    """
    cfg = self.cfg
    record_path = pathlib.Path(checkpoint_dir) / "validation.json"
    rounds = (json.loads(record_path.read_text())["rounds"]
              if record_path.exists() else [])
    metrics = common.ModelMetrics(self.log, cfg.method)
    best = min(rounds, key=lambda r: r["loss"]) if rounds else None
    state = hist = None
    while True:
      since_best = (0 if best is None else
                    sum(1 for r in rounds if r["step"] > best["step"]))
      done = rounds[-1]["step"] if rounds else 0
      if done >= cfg.iterations or since_best >= cfg.patience:
        break
      target = min(cfg.iterations, done + cfg.val_every)
      # The previous round's state: no re-initialisation per round.
      state, hist, metrics = self.fit(train_sampler, target, checkpoint_dir,
                                      cfg.method, metrics, state)
      val = evaluation.evaluate(
          self.learner, state.params, val_sampler, num_tasks=cfg.val_tasks,
          seed=validation_seed(cfg, target), batch_size=cfg.eval_batch,
          model_state=state.model_state)
      loss = float(np.mean(val.per_task["loss"][:, -1]))
      row = {"step": target, "loss": loss, "accuracy": val.mean,
             "ci95": val.ci95}
      self.log.write_many(target, {k: np.asarray([row[k]])
                                   for k in ("loss", "accuracy")},
                          prefix=f"{cfg.method}/val")
      if best is None or loss < best["loss"]:
        best = row
        training.save_checkpoint(pathlib.Path(checkpoint_dir) / "best",
                                 state, {})
      rounds.append(row)
      workdir_lib.write_json_atomic(record_path, {"rounds": rounds})
    stopped_early = since_best >= cfg.patience
    if state is None:  # everything was done before: the last checkpoint
      state, hist, metrics = self.fit(train_sampler, rounds[-1]["step"],
                                      checkpoint_dir, cfg.method, metrics)
    restored = training.load_checkpoint(
        pathlib.Path(checkpoint_dir) / "best", state)
    state = restored[0]
    validation = {
        "criterion": "mean query loss on validation episodes",
        "every": cfg.val_every, "tasks": cfg.val_tasks, "seed": cfg.val_seed,
        "episodes": cfg.val_episodes,
        "patience": cfg.patience, "stopped_early": stopped_early,
        "best_step": best["step"], "best_loss": best["loss"],
        "best_accuracy": best["accuracy"], "rounds": rounds,
        "tested": "best validated weights"}
    return state, hist, metrics, validation


def validation_seed(cfg: configs.Config, step: int) -> int:
  """The task stream of the validation round that ends at ``step``: the
  same every round (``val_episodes='fixed'``) or one per round
  (``'fresh'``)."""
  return cfg.val_seed + (step if cfg.val_episodes == "fresh" else 0)


def published_of(r: dict) -> dict | None:
  """The published reference of a results file: the library's current one
  for the run's paper cell and batch-norm policy, which can know more than
  the file does (a re-run of the official code reported since the run);
  otherwise the one the file recorded."""
  try:
    setting = paper_configs.get(r["method"], r["paper_setting"]["name"])
    policy = r["protocol"]["batch_norm_policy"]
  except (KeyError, TypeError, ValueError):
    return r.get("published")
  return published_for(setting, policy) or r.get("published")


def _published_cell(published: dict | None) -> str:
  """The published number for a table cell, with its interval and, where
  others re-ran the official code, what the code gave."""
  if not published:
    return "-"
  cell = f"{published['value']:.2f}"
  if published.get("ci95") is not None:
    cell += f" ± {published['ci95']:.2f}"
  if published.get("official_code_rerun") is not None:
    cell += f" (code re-run: {published['official_code_rerun']:.2f})"
  return cell


def _row(r: dict) -> str:
  """One table row of a results file (this layout, or the earlier one
  without ``budget``/``run``/``published``, as committed under
  ``results/``)."""
  t, train, cfg = r["test"], r.get("train", {}), r.get("config", {})
  seconds = train.get("seconds")
  seconds = "-" if seconds is None else f"{seconds:.0f}"
  resumed = train.get("resumed_from_step")
  if resumed and train.get("steps_trained") is not None:
    seconds += f" (last {train['steps_trained']} steps)"
  loss = "-"
  if "loss_first" in train and "loss_last" in train:
    loss = f"{train['loss_first']:.3f} -> {train['loss_last']:.3f}"
  paper = _published_cell(published_of(r))
  cell = "{}w{}s".format(cfg.get("ways", "?"), cfg.get("shots", "?"))
  protocol = r.get("protocol", {})
  per_step = cfg.get("meta_batch", "-")
  if protocol.get("train_sampler", {}).get("kind") == "class_batches":
    per_step = f"{cfg['pretrain_batch']} images"  # pretraining minibatches
  return (f"| {r.get('method', cfg.get('method', '?'))} | {cell} | "
          f"{100 * t['mean']:.2f} ± {100 * t['ci95']:.2f} | {paper} | "
          f"{protocol.get('batch_norm_policy', protocol.get('batch_norm', cfg.get('norm', '-')))} | "
          f"{t['steps'] if t.get('steps') is not None else '-'} | "
          f"{train.get('iterations', cfg.get('iterations', '-'))} | "
          f"{per_step} | {t['num_tasks']} | "
          f"{cfg.get('seed', '-')} | {loss} | {seconds} | "
          f"{r.get('budget', '-')} |")


def _seedless_config(cfg: dict) -> str:
  """The run's configuration without its seed, as a grouping key. Fields a
  results file lacks (written before the field existed) take the
  :class:`~experiments.omniglot.configs.Config` default, which is what such a
  run did."""
  full = {**config_lib.to_dict(configs.Config()), **cfg}
  full.pop("seed", None)
  return json.dumps(full, sort_keys=True, default=str)


def seed_table(root) -> str:
  """A markdown table of the runs under ``root`` that differ only in their
  seed: one row per configuration run with two or more seeds, giving each
  seed's test accuracy with its 95% interval over test tasks, then the mean
  and the sample standard deviation (``ddof=1``) across seeds. ``''`` when
  no configuration has two seeds.

  Seeds change initialisation and training episodes; the test episodes are
  drawn from ``eval_seed`` and stay the same, so the spread is the seed's.
  """
  groups: dict[str, list] = {}
  for path in sorted(pathlib.Path(root).glob("*/results.json")):
    try:
      r = json.loads(path.read_text())
      key = _seedless_config(r["config"])
      t = r["test"]
      run = (r["config"].get("seed", 0), path.parent.name, t["mean"], t["ci95"])
    except (OSError, ValueError, KeyError, TypeError):
      continue
    groups.setdefault(key, []).append((run, r))
  rows = []
  for runs in groups.values():
    if len({seed for (seed, *_), _ in runs}) < 2:
      continue
    runs.sort(key=lambda run: run[0][:2])
    r = runs[0][1]
    cfg = r["config"]
    acc = 100 * np.array([mean for (_, _, mean, _), _ in runs])
    paper = _published_cell(published_of(r))
    each = "; ".join(f"{seed} ({name}): {100 * mean:.2f} ± {100 * ci:.2f}"
                     for (seed, name, mean, ci), _ in runs)
    rows.append(
        f"| {r.get('method', cfg.get('method', '?'))} | "
        f"{cfg.get('ways', '?')}w{cfg.get('shots', '?')}s | {each} | "
        f"{acc.mean():.2f} ± {acc.std(ddof=1):.2f} ({len(runs)} seeds) | "
        f"{paper} | {r.get('budget', '-')} |")
  if not rows:
    return ""
  head = ("| method | cell | seed (run): test accuracy % (95% CI) | "
          "mean ± sd across seeds | published % | budget |\n"
          "|---|---|---|---|---|---|")
  return "\n".join([head] + rows)


def learning_curves(root, path=None, *, window: int = 50):
  """Draws every run under ``root`` (``*/metrics.jsonl``) into one figure.

  Left: training query accuracy (moving mean over ``window`` steps) against
  meta-steps; right: validation accuracy where a run validated. Each line
  is labelled with the run's folder name. Writes ``path`` (default
  ``<root>/curves.png``) and returns it.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  root = pathlib.Path(root)
  path = pathlib.Path(path) if path is not None else root / "curves.png"
  fig = Figure(figsize=(11, 4))
  FigureCanvasAgg(fig)
  ax_train, ax_val = fig.subplots(1, 2)
  drawn = 0
  for run in sorted(p.parent for p in root.glob(f"*/{metrics_log.METRICS_NAME}")):
    rows = metrics_log.read_metrics(run)
    by_split: dict[str, list] = {}
    for r in rows:
      by_split.setdefault(r.get("split", ""), []).append(r)
    for split, rs in sorted(by_split.items()):
      rs = [r for r in rs if "accuracy" in r]
      if not rs:
        continue
      steps = np.array([r["step"] for r in rs])
      acc = 100 * np.array([r["accuracy"] for r in rs], np.float64)
      if split.endswith("/val"):
        ax_val.plot(steps, acc, label=run.name)
      elif split.endswith("/train"):
        w = max(1, min(window, len(acc)))
        smooth = np.convolve(acc, np.ones(w) / w, mode="valid")
        label = run.name + ("" if split.split("/")[0] == run.name else
                            f" ({split.split('/')[0]})")
        ax_train.plot(steps[w - 1:], smooth, label=label)
        drawn += 1
  if not drawn:
    raise ValueError(f"no training metrics under {root}")
  ax_train.set(xlabel="meta-step", ylabel=f"query accuracy % (mean of {window})",
               title="training")
  ax_val.set(xlabel="meta-step", ylabel="accuracy %",
             title="validation episodes")
  ax_train.legend(fontsize=7)
  if ax_val.lines:
    ax_val.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  return path


def table(root) -> str:
  """A markdown table of every ``*/results.json`` under ``root``.

  Files that are not Omniglot results (no ``test`` mean) are skipped, so
  the table of a folder of runs never fails on one foreign file.
  """
  rows = []
  for path in sorted(pathlib.Path(root).glob("*/results.json")):
    try:
      r = json.loads(path.read_text())
      rows.append(_row(r))
    except (OSError, ValueError, KeyError, TypeError):
      continue
  head = ("| method | cell | test accuracy % (95% CI) | published % | "
          "batch norm | inner steps at test | iterations | tasks/step | "
          "test tasks | seed | train loss first -> last 10% | train s | "
          "budget |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  return "\n".join([head] + rows)
