"""The neural-process family side by side: one table, one figure.

``python -m experiments.gp_cnp --family DIR`` reads the runs under ``DIR``
(``DIR/<name>/results.json``, e.g. a CNP, a latent NP and an ANP trained by
``--set method=...`` on the same GP tasks), prints a markdown table of their
test log-likelihood per target and MSE with 95% intervals, and draws
``DIR/family.png``: each model's predictive mean and +-2 sigma band on the
same test functions (one row per function, one column per model), from the
runs' final checkpoints. Every test number comes from the same
``eval_seed`` functions, so the rows are paired.
"""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import optax

from experiments.gp_cnp import configs, train
from metajax import core, training
from metajax.core.tasks import task_slice
from metajax.data import gp
from metajax.experiment import workdir as workdir_lib

FIGURE = "family.png"


def runs(root) -> dict[str, dict]:
  """``{folder name: results}`` of the GP runs under ``root``, in the order
  CNP, NP, ANP (then by name)."""
  out = {}
  for path in sorted(pathlib.Path(root).glob("*/results.json")):
    r = json.loads(path.read_text())
    if r.get("experiment") == "gp_cnp":
      out[path.parent.name] = r
  order = {m: i for i, m in enumerate(configs.METHODS)}
  return dict(sorted(out.items(), key=lambda kv: (
      order.get(kv[1].get("method", "cnp"), 99), kv[0])))


def table(root) -> str:
  """A markdown table of the runs under ``root``."""
  rows = ["| run | model | log-likelihood per target (95% CI) | MSE (95% CI) "
          "| iterations | budget | test tasks | train s |",
          "|---|---|---|---|---|---|---|---|"]
  for name, r in runs(root).items():
    t = r["test"]
    ll, mse = t["log_likelihood_per_target"], t["mse"]
    rows.append(
        f"| {name} | {train.NAMES[r.get('method', 'cnp')]} | "
        f"{ll['mean']:.3f} ± {ll['ci95']:.3f} | {mse['mean']:.4f} ± "
        f"{mse['ci95']:.4f} | {r['train']['iterations']} | {r['budget']} | "
        f"{t['num_tasks']} | {r['train']['seconds']:.0f} |")
  return "\n".join(rows)


def _restore(run_dir: pathlib.Path, results: dict):
  cfg = configs.Config(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in results["config"].items()})
  learner = train.build_learner(cfg)
  example = task_slice(train.sample(cfg, jax.random.PRNGKey(0), 1), 0)
  like = core.init_state(learner, optax.adam(cfg.meta_lr),
                         jax.random.PRNGKey(0), example)
  restored = training.load_checkpoint(
      workdir_lib.checkpoint_dir(run_dir) / cfg.method, like)
  if restored is None:
    raise FileNotFoundError(
        f"{run_dir}: no checkpoint under checkpoints/{cfg.method}; the figure "
        "needs the trained parameters")
  return cfg, learner, restored[0].params


def figure(root, path=None, *, functions: int = 3) -> pathlib.Path:
  """Draws every run's predictions on the same ``functions`` test functions
  (the first run's ``eval_seed``, as its own figures) into ``path``
  (default ``<root>/family.png``)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  root = pathlib.Path(root)
  path = pathlib.Path(path) if path is not None else root / FIGURE
  found = runs(root)
  if not found:
    raise ValueError(f"no GP runs under {root}")
  models = [(name, *_restore(root / name, r)) for name, r in found.items()]
  cfg0 = models[0][1]
  key = jax.random.fold_in(jax.random.PRNGKey(cfg0.eval_seed), 10**6)
  tasks = train.sample(cfg0, key, functions, testing=True)
  fig = Figure(figsize=(4.2 * len(models), 3.0 * functions))
  FigureCanvasAgg(fig)
  axes = fig.subplots(functions, len(models), squeeze=False)
  for j in range(functions):
    t = gp.unpad(task_slice(tasks, j))
    order = np.argsort(np.asarray(t.query_x[:, 0]))
    x = np.asarray(t.query_x[:, 0])[order]
    for col, (name, cfg, learner, params) in enumerate(models):
      pred = learner.predict(params,
                             learner.adapt(params, t.support_x, t.support_y),
                             t.query_x)
      mean = np.asarray(pred.mean[:, 0])[order]
      sd = np.asarray(pred.stddev[:, 0])[order]
      ax = axes[j, col]
      ax.plot(x, np.asarray(t.query_y[:, 0])[order], "k:", lw=1,
              label="truth")
      ax.plot(x, mean, "b", lw=1.5, label="mean")
      ax.fill_between(x, mean - 2 * sd, mean + 2 * sd, alpha=0.2,
                      color="tab:blue", label="±2σ")
      ax.plot(np.asarray(t.support_x[:, 0]), np.asarray(t.support_y[:, 0]),
              "ko", ms=4, label="context")
      if j == 0:
        ax.set_title(f"{train.NAMES[cfg.method]} ({name})")
      if j == 0 and col == 0:
        ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  return path
