"""Training and evaluation of one learner on few-shot Omniglot.

:func:`train_and_evaluate` loads the class split, meta-trains through
:func:`metajax.training.fit` on N-way K-shot episodes sampled on device
(checkpoints in ``<workdir>/checkpoints/<method>``, so a rerun resumes;
per-step metrics under ``<method>/train`` in ``<workdir>/metrics.jsonl``),
tests on ``eval_tasks`` episodes of the test classes drawn from
``eval_seed`` through :func:`metajax.evaluation.evaluate` (the same tasks
for every method, so accuracies are paired) and writes ``results.json``.
:func:`table` puts the results of many runs side by side.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import numpy as np
import optax

from experiments import common
from experiments.omniglot import configs
from metajax import configs as paper_configs
from metajax import evaluation, training
from metajax.data import datadir, omniglot, sampler, splits
from metajax.experiment import config as config_lib
from metajax.experiment import metrics_log, record
from metajax.experiment import workdir as workdir_lib


def load_split(cfg: configs.Config, data_dir, cache_dir=None):
  """The Omniglot classes at ``cfg.image_size``, split by ``cfg.split``."""
  data = omniglot.load_omniglot(data_dir, size=cfg.image_size,
                                cache_dir=cache_dir)
  return splits.split_omniglot(data, cfg.split, data_dir=data_dir)


def outer_optimizer(cfg: configs.Config, learner, paper
                    ) -> tuple[optax.GradientTransformation, dict]:
  """``(optimiser, its description)``: Adam(``meta_lr``), or Reptile's own.

  Reptile's meta step anneals linearly from the paper's ``meta_step`` to
  ``meta_step_final`` over this run's ``iterations`` (not the paper's
  100,000), so a short run ends its schedule as the paper's does.
  """
  if cfg.method == "reptile":
    o = paper.outer
    kw = dict(meta_step=o["meta_step"], meta_step_final=o["meta_step_final"],
              meta_iters=cfg.iterations)
    return learner.outer_optimizer(**kw), {"name": "reptile_sgd", **kw}
  return optax.adam(cfg.meta_lr), {"name": "adam", "meta_lr": cfg.meta_lr}


def paper_iterations(outer) -> int | None:
  """The paper's meta-training steps, where its outer loop states them."""
  if "meta_iters" in outer:
    return int(outer["meta_iters"])
  for per_epoch in ("episodes_per_epoch", "batches_per_epoch"):
    if "epochs" in outer and per_epoch in outer:
      return int(outer["epochs"]) * int(outer[per_epoch])
  return None


def describe(learner) -> dict:
  """The learner's settings as JSON-friendly strings and numbers."""
  out = {"class": type(learner).__name__}
  if dataclasses.is_dataclass(learner):
    for f in dataclasses.fields(learner):
      v = getattr(learner, f.name)
      out[f.name] = (v if isinstance(v, (int, float, str, bool, type(None)))
                     else repr(v)[:200])
  return out


def train_and_evaluate(config: configs.Config, workdir, *, data_dir=None,
                       progress: bool = True, cache_dir=None) -> dict:
  """Meta-trains ``config.method``, tests it and writes ``results.json``.

  Args:
    config: a validated :class:`configs.Config`.
    workdir: the prepared run folder (see :mod:`metajax.experiment.workdir`).
    data_dir: the data root holding ``omniglot/`` and ``splits/``; ``None``:
      ``$METAJAX_DATA_DIR``.
    progress: show a progress bar.
    cache_dir: where decoded images are cached (``None``: the default, see
      :mod:`metajax.data.datadir`).

  Returns:
    The dict written to ``results.json``.
  """
  started = time.time()
  workdir = pathlib.Path(workdir)
  cfg = config
  data_dir = datadir.resolve_data_dir(data_dir, dataset="omniglot")
  split = load_split(cfg, data_dir, cache_dir)
  ways, shots, queries = cfg.episodes(train=True)
  train_sampler = sampler.EpisodeSampler(
      split.train, ways=ways, shots=shots, queries=queries,
      num_tasks=cfg.meta_batch, rotation=cfg.rotation)
  test_sampler = sampler.EpisodeSampler(
      split.test, ways=cfg.ways, shots=cfg.shots, queries=cfg.queries,
      rotation=cfg.rotation)
  paper = paper_configs.get(cfg.method, cfg.setting)
  learner = configs.build_learner(cfg)
  optimizer, optimizer_info = outer_optimizer(cfg, learner, paper)
  with metrics_log.MetricsLog(workdir) as log:
    metrics = common.ModelMetrics(log, cfg.method)
    t0 = time.time()
    state, hist = training.fit(
        learner, optimizer, train_sampler, num_steps=cfg.iterations,
        seed=cfg.seed, steps_per_call=cfg.steps_per_call,
        task_map=cfg.task_map, chunk_size=cfg.chunk_size,
        checkpoint_dir=workdir_lib.checkpoint_dir(workdir) / cfg.method,
        checkpoint_every=cfg.checkpoint_every, progress=progress,
        desc=cfg.method, on_metrics=metrics)
    train_s = time.time() - t0
  t0 = time.time()
  result = evaluation.evaluate(
      learner, state.params, test_sampler, num_tasks=cfg.eval_tasks,
      seed=cfg.eval_seed, steps=cfg.eval_steps, batch_size=cfg.eval_batch)
  eval_s = time.time() - t0
  n = len(hist["loss"])
  window = max(1, n // 10)
  train = {
      "iterations": n,
      "resumed_from_step": (cfg.iterations if metrics.resumed_from is None
                            else metrics.resumed_from),
      "steps_trained": metrics.steps_run,
      "seconds": round(train_s, 1),
      "checkpoint": f"{workdir_lib.CHECKPOINTS}/{cfg.method}",
      "metrics_split": metrics.split,
      "loss_first": float(np.mean(hist["loss"][:window])),
      "loss_last": float(np.mean(hist["loss"][-window:])),
  }
  for k in ("accuracy", "pre_accuracy"):
    if k in hist:
      train[f"{k}_last"] = float(np.mean(hist[k][-window:]))
  iterations_paper = paper_iterations(paper.outer)
  results = {
      "experiment": "omniglot",
      "method": cfg.method,
      "budget": (common.budget(cfg.iterations, iterations_paper)
                 if iterations_paper is not None else common.SHORTENED),
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
          "train_sampler": train_sampler.config(),
          "test_sampler": test_sampler.config(),
          "backbone": {"name": "conv4", "filters": cfg.filters,
                       "blocks": cfg.blocks, "downsample": cfg.downsample,
                       "features": cfg.features,
                       "head": cfg.method in configs.HEAD_METHODS},
          "batch_norm": cfg.norm,
      },
      "train": train,
      "test": result.to_dict(),
      "eval_seconds": round(eval_s, 1),
      "run": record.run_info(seed=cfg.seed, started=started,
                             finished=time.time()),
  }
  results = workdir_lib.jsonable(results)  # returned as written
  path = workdir_lib.write_results(workdir, results)
  t = results["test"]
  print(f"{cfg.method}: {cfg.ways}-way {cfg.shots}-shot test {t['metric']} "
        f"{100 * t['mean']:.2f} ± {100 * t['ci95']:.2f} % over "
        f"{t['num_tasks']} tasks ({results['budget']} budget)")
  print(f"wrote {path}")
  return results


def _row(r: dict) -> str:
  """One table row of a results file (this layout, or the earlier one
  without ``budget``/``run``, as committed under ``results/``)."""
  t, train, cfg = r["test"], r.get("train", {}), r.get("config", {})
  seconds = train.get("seconds")
  seconds = "-" if seconds is None else f"{seconds:.0f}"
  resumed = train.get("resumed_from_step")
  if resumed and train.get("steps_trained") is not None:
    seconds += f" (last {train['steps_trained']} steps)"
  loss = "-"
  if "loss_first" in train and "loss_last" in train:
    loss = f"{train['loss_first']:.3f} -> {train['loss_last']:.3f}"
  return (f"| {r.get('method', cfg.get('method', '?'))} | "
          f"{100 * t['mean']:.2f} ± {100 * t['ci95']:.2f} | "
          f"{t['steps'] if t.get('steps') is not None else '-'} | "
          f"{train.get('iterations', cfg.get('iterations', '-'))} | "
          f"{cfg.get('meta_batch', '-')} | {loss} | {seconds} | "
          f"{r.get('budget', '-')} |")


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
  head = ("| method | test accuracy % (95% CI) | inner steps at test | "
          "iterations | tasks/step | train loss first -> last 10% | train s | "
          "budget |\n|---|---|---|---|---|---|---|---|")
  return "\n".join([head] + rows)
