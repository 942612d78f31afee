"""Training and evaluation of the CNP, the latent NP and the ANP
(``Config.method``) on 1-D Gaussian-process regression.

:func:`train_and_evaluate` meta-trains through :func:`metajax.training.fit`
with the GP sampler on device (``sampler_on_device=True``): each batch's
context and target counts are drawn inside the compiled chunk and the
batch is padded to the largest shape (:mod:`metajax.data.gp`), so the whole
run compiles one chunk of ``steps_per_call`` meta-steps. The tasks of step
``i`` come from ``fold_in(data_key, i)`` with ``data_key`` the second half
of ``split(PRNGKey(seed))``, so a resumed run sees the same batches as an
uninterrupted one. Checkpoints go to ``<workdir>/checkpoints/<method>``,
per-step metrics under ``<method>/train`` in ``<workdir>/metrics.jsonl``.

Test tasks are functions on a 400-point grid with a random context subset
(its size drawn per task, padded likewise), drawn from ``eval_seed`` by
:func:`metajax.evaluation.evaluate`. The result is the mean predictive
log-likelihood per target point (and the MSE of the predictive mean) over
the test tasks with a 95% interval, plus figures of the predictive mean and
+-2 sigma band on a few test functions (drawn without the padding,
:func:`metajax.data.gp.unpad`).
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

import jax
import numpy as np
import optax

from experiments import common
from experiments.gp_cnp import configs
from metajax import configs as paper_configs
from metajax import evaluation, training
from metajax.algorithms import registry
from metajax.core.tasks import task_slice
from metajax.data import gp
from metajax.evaluation.plots import plot_predictions
from metajax.experiment import config as config_lib
from metajax.experiment import metrics_log, record
from metajax.experiment import workdir as workdir_lib

SETTING = "gp_1d"
#: display names of the models.
NAMES = {"cnp": "CNP", "np": "NP", "anp": "ANP"}


def build_learner(cfg: configs.Config):
  """``cfg.method``'s model with the paper's sizes, or the config's where
  set (``encoder_sizes`` is both encoders of the NP and the ANP)."""
  if cfg.method == "cnp":
    pairs = (("encoder_sizes", cfg.encoder_sizes),
             ("decoder_sizes", cfg.decoder_sizes))
  else:
    pairs = (("latent_sizes", cfg.encoder_sizes),
             ("deterministic_sizes", cfg.encoder_sizes),
             ("decoder_sizes", cfg.decoder_sizes))
  overrides = {k: tuple(v) for k, v in pairs if v is not None}
  return registry.make(cfg.method, None, setting=SETTING, **overrides)


def sample(cfg: configs.Config, rng, num_tasks: int, *, testing=False):
  """A batch of GP tasks with the config's kernel and context bound."""
  return gp.sample_tasks(rng, num_tasks, max_context=cfg.max_context,
                         length_scale=cfg.length_scale, testing=testing)


def _describe(learner) -> dict:
  out = {"class": type(learner).__name__}
  for f in dataclasses.fields(learner):
    v = getattr(learner, f.name)
    out[f.name] = list(v) if isinstance(v, tuple) else v
  return out


def figures(cfg: configs.Config, learner, params, workdir: pathlib.Path
            ) -> list[str]:
  """``cfg.plots`` test functions with the predictive mean and band, as PNGs."""
  if not cfg.plots:
    return []
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.eval_seed), 10**6)
  tasks = sample(cfg, key, cfg.plots, testing=True)
  names = []
  for j in range(cfg.plots):
    t = gp.unpad(task_slice(tasks, j))
    pred = learner.predict(params,
                           learner.adapt(params, t.support_x, t.support_y),
                           t.query_x)
    name = f"{cfg.method}_gp_{j}.png"
    plot_predictions(workdir / name, t.query_x, t.query_y, t.support_x,
                     t.support_y, pred.mean, pred.stddev,
                     title=f"{NAMES[cfg.method]}, {t.support_x.shape[0]} "
                     "context points")
    names.append(name)
  return names


def train_and_evaluate(config: configs.Config, workdir, *, data_dir=None,
                       progress: bool = True, devices=None) -> dict:
  """Meta-trains the CNP, tests it, writes ``results.json`` and figures.

  Args:
    config: a validated :class:`configs.Config`.
    workdir: the prepared run folder (see :mod:`metajax.experiment.workdir`).
    data_dir: unused: GP tasks are sampled, not read from files.
    progress: show a progress bar.
    devices: shard each meta-batch over these devices (see
      :func:`metajax.fit`; ``None``: one device).

  Returns:
    The dict written to ``results.json``.
  """
  del data_dir
  started = time.time()
  workdir = pathlib.Path(workdir)
  cfg = config
  method = cfg.method
  paper = paper_configs.get(method, SETTING)
  learner = build_learner(cfg)
  with metrics_log.MetricsLog(workdir) as log:
    metrics = common.ModelMetrics(log, method)
    t0 = time.time()
    state, hist = training.fit(
        learner, optax.adam(cfg.meta_lr),
        lambda rng: sample(cfg, rng, cfg.meta_batch),
        num_steps=cfg.iterations, seed=cfg.seed,
        steps_per_call=cfg.steps_per_call,
        checkpoint_dir=workdir_lib.checkpoint_dir(workdir) / method,
        checkpoint_every=cfg.checkpoint_every, progress=progress,
        desc=method, on_metrics=metrics, sampler_on_device=True,
        devices=devices)
    train_s = time.time() - t0
  t0 = time.time()
  result = evaluation.evaluate(
      learner, state.params,
      functools.partial(sample, cfg, testing=True),
      num_tasks=cfg.eval_tasks, seed=cfg.eval_seed, steps=None,
      batch_size=cfg.eval_batch, task_map="vmap",
      config={"max_context": cfg.max_context,
              "num_context": f"U{{3, ..., {cfg.max_context - 1}}} per task",
              "length_scale": cfg.length_scale, "num_grid": gp.NUM_GRID})
  eval_s = time.time() - t0
  nll = result.per_task["loss"][:, -1]
  ll_mean, ll_ci = evaluation.mean_ci95(-nll)
  mse_mean, mse_ci = evaluation.mean_ci95(result.per_task["mse"][:, -1])
  loss = np.asarray(hist["loss"])
  curve_steps = sorted(set(range(cfg.log_every, cfg.iterations + 1,
                                 cfg.log_every)) | {cfg.iterations})
  paper_iterations = int(paper.outer["meta_iters"])
  results = {
      "experiment": "gp_cnp",
      "method": method,
      "budget": common.budget(cfg.iterations, paper_iterations),
      "paper_iterations": paper_iterations,
      "config": config_lib.to_dict(cfg),
      "learner": _describe(learner),
      "paper_setting": {"name": SETTING, "source": paper.source,
                        "note": paper.note},
      "train": {
          "iterations": int(loss.size),
          "resumed_from_step": (cfg.iterations if metrics.resumed_from is None
                                else metrics.resumed_from),
          "steps_trained": metrics.steps_run,
          "seconds": round(train_s, 1),
          "metrics_split": metrics.split,
          "checkpoint": f"{workdir_lib.CHECKPOINTS}/{method}",
          # (step count, loss of that step), every log_every steps.
          "loss_curve": [[s, float(loss[s - 1])] for s in curve_steps],
      },
      "test": {
          **result.to_dict(),
          "log_likelihood_per_target": {"mean": float(ll_mean),
                                        "ci95": float(ll_ci)},
          "mse": {"mean": float(mse_mean), "ci95": float(mse_ci)},
      },
      "eval_seconds": round(eval_s, 1),
      "figures": figures(cfg, learner, state.params, workdir),
      "run": record.run_info(seed=cfg.seed, started=started, devices=devices,
                             finished=time.time()),
  }
  results = workdir_lib.jsonable(results)  # returned as written
  path = workdir_lib.write_results(workdir, results)
  t = results["test"]
  print(f"{NAMES[method]} on GP regression: log-likelihood per target "
        f"{t['log_likelihood_per_target']['mean']:.3f} ± "
        f"{t['log_likelihood_per_target']['ci95']:.3f}, MSE "
        f"{t['mse']['mean']:.4f} ± {t['mse']['ci95']:.4f} over "
        f"{t['num_tasks']} tasks ({results['budget']} budget)")
  print(f"wrote {path}")
  return results
