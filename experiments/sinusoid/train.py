"""Training and evaluation of the sinusoid experiment: MAML vs a pretrained MLP.

:func:`train_and_evaluate` trains every model through
:func:`metajax.training.fit` (checkpoints in
``<workdir>/checkpoints/<method>_K<shots>``, so a rerun resumes; per-step
metrics under ``<method>_K<shots>/train`` in ``<workdir>/metrics.jsonl``),
tests each on the same fixed tasks per K through
:func:`metajax.evaluation.evaluate`, and writes ``results.json`` and
``sinusoid.png`` (MAML's Fig. 2) into the workdir.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import common
from experiments.sinusoid import configs
from metajax import evaluation, training
from metajax.algorithms.cavia import CAVIA
from metajax.algorithms.maml import MAML
from metajax.data import sinusoid
from metajax.experiment import config as config_lib
from metajax.experiment import metrics_log, record
from metajax.experiment import workdir as workdir_lib
from metajax.models import MLP
from metajax.models.mlp import MAML_INIT

# MAML paper (Finn et al., 2017), K=5, read from its Fig. 3.
PAPER_K5 = {"maml": {1: 0.67, 5: 0.38, 10: 0.35},
            "pretrained": {1: 2.41, 5: 2.23, 10: 2.19}}
FIGURE = "sinusoid.png"


def learners(cfg: configs.Config) -> dict[str, MAML]:
  """MAML and the pretrained baseline (one MLP, one test-time inner loop),
  and CAVIA on the same MLP when ``cfg.cavia``."""
  init = MAML_INIT if cfg.init == "maml" else MLP.kernel_init
  model = MLP(hidden=tuple(cfg.hidden), num_outputs=1, kernel_init=init)
  maml = MAML(model, loss="mse", inner_steps=cfg.inner_steps,
              inner_lr=cfg.inner_lr, first_order=cfg.first_order,
              eval_inner_steps=cfg.eval_steps)
  # Zero inner steps: plain regression on every task's points ("pretrained
  # on all tasks"); at test time it is fine-tuned with the same inner loop,
  # at its own step if one is set.
  pretrained = dataclasses.replace(
      maml, inner_steps=0,
      inner_lr=(cfg.inner_lr if cfg.baseline_inner_lr is None
                else cfg.baseline_inner_lr))
  out = {"maml": maml, "pretrained": pretrained}
  if cfg.cavia:
    out["cavia"] = CAVIA(model, num_context=cfg.cavia_context, loss="mse",
                         inner_steps=cfg.inner_steps,
                         inner_lr=cfg.cavia_inner_lr,
                         first_order=cfg.first_order,
                         eval_inner_steps=cfg.eval_steps)
  return out


def fixed_test_tasks(cfg: configs.Config, shots: int):
  """The fixed test tasks with ``shots`` support points, one batch.

  Drawn from ``fold_in(PRNGKey(eval_seed), shots)`` as one batch of
  ``eval_tasks``, so every model (and every earlier run of this experiment)
  is tested on exactly the same sinusoids and points.
  """
  return sinusoid.sample_tasks(
      jax.random.fold_in(jax.random.PRNGKey(cfg.eval_seed), shots),
      cfg.eval_tasks, shots, cfg.eval_query or shots)


def evaluate_k(cfg: configs.Config, learner, params, shots: int) -> dict:
  """Per-step MSE on the K=``shots`` test tasks, through the harness."""
  result = evaluation.evaluate(
      learner, params, fixed_test_tasks(cfg, shots), seed=cfg.eval_seed,
      steps=cfg.eval_steps, batch_size=cfg.eval_tasks, task_map="vmap",
      config={"shots": shots, "query": cfg.eval_query or shots})
  curves = result.per_task["loss"]  # (tasks, eval_steps + 1)
  mean = np.asarray(result.curves["loss"]["mean"])
  ci = np.asarray(result.curves["loss"]["ci95"])
  return {
      "metric": result.metric, "mean": result.mean, "ci95": result.ci95,
      "num_tasks": result.num_tasks, "steps": result.steps,
      "mse_by_step": mean.tolist(), "ci95_by_step": ci.tolist(),
      "median_by_step": np.median(curves, 0).tolist(),
      # Tasks whose MSE grew above 10x their pre-update MSE: repeated steps
      # of the meta-training step size overshoot on them.
      "diverged_tasks_by_step": [int(n) for n in np.sum(
          ~(curves <= 10 * curves[:, :1]), 0)],
      "report": {str(s): {"mse": float(mean[s]), "ci95": float(ci[s])}
                 for s in cfg.report_steps},
      "config": result.config,
  }


def figure(path, models_by_k, cfg: configs.Config):
  """MAML's Fig. 2: one column per K, one row per method."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  shots_list = sorted(models_by_k)
  names = list(models_by_k[shots_list[0]])
  fig, axes = plt.subplots(len(names), len(shots_list),
                           figsize=(5 * len(shots_list), 3.6 * len(names)),
                           squeeze=False)
  xs = jnp.linspace(-5, 5, 200)[:, None]
  for col, shots in enumerate(shots_list):
    rng = jax.random.fold_in(jax.random.PRNGKey(cfg.eval_seed + 1000), shots)
    task, tp = sinusoid.sample_tasks(rng, 1, shots, 1, return_params=True)
    truth = sinusoid.sinusoid(tp, xs[None])[0]
    task1 = jax.tree_util.tree_map(lambda a: a[0], task)
    for row, name in enumerate(names):
      learner, params = models_by_k[shots][name]
      ax = axes[row, col]
      ax.plot(xs[:, 0], truth[:, 0], "r", lw=2, label="ground truth")
      ax.plot(xs[:, 0], learner.apply(params["model"], xs)[:, 0], "g:",
              label="pre-update")
      for steps, style in ((1, "--"), (cfg.eval_steps, "-")):
        if steps < 1:
          continue
        adapted = learner.adapt(params, task1.support_x, task1.support_y,
                                steps=steps)
        ax.plot(xs[:, 0], learner.apply(adapted, xs)[:, 0], "b" + style,
                alpha=0.5 if steps == 1 else 1.0,
                label=f"{steps} grad step{'s' if steps > 1 else ''}")
      ax.plot(task1.support_x[:, 0], task1.support_y[:, 0], "k^",
              label="used for grad")
      ax.set_title(f"{name}, K={shots}")
      ax.set_ylim(-5.5, 5.5)
      ax.legend(loc="lower right", fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def train_model(cfg: configs.Config, name: str, learner, train_shots: int,
                workdir: pathlib.Path, log: metrics_log.MetricsLog,
                progress: bool, devices=None):
  """Trains (or resumes) one model; ``(state, results entry)``."""
  model_id = f"{name}_K{train_shots}"
  iterations = cfg.baseline_iters if name == "pretrained" else cfg.iterations

  def sample(rng):
    return sinusoid.sample_tasks(rng, cfg.meta_batch, train_shots,
                                 cfg.train_query)

  metrics = common.ModelMetrics(log, model_id)
  t0 = time.time()
  state, hist = training.fit(
      learner, optax.adam(cfg.meta_lr), sample, num_steps=iterations,
      seed=cfg.seed, steps_per_call=cfg.steps_per_call,
      checkpoint_dir=workdir_lib.checkpoint_dir(workdir) / model_id,
      checkpoint_every=cfg.checkpoint_every, progress=progress,
      desc=f"{name} (K={train_shots})", on_metrics=metrics, devices=devices)
  entry = {
      "iterations": iterations, "train_shots": train_shots,
      "checkpoint": f"{workdir_lib.CHECKPOINTS}/{model_id}",
      "metrics_split": metrics.split,
      # This process's share: a resumed run trains only the missing steps.
      "resumed_from_step": (iterations if metrics.resumed_from is None
                            else metrics.resumed_from),
      "steps_trained": metrics.steps_run,
      "train_seconds": round(time.time() - t0, 2),
      "final_train_loss": float(np.mean(hist["loss"][-1000:])),
      "eval": {},
  }
  return state, entry


def summary(results: dict) -> str:
  """The setting, then one line per method and K: the reported MSEs, the
  paper's beside K=5."""
  lines = [f"setting: {results['setting']} ({results['budget']} budget)"]
  for key, entry in results["methods"].items():
    paper = PAPER_K5.get(key.split("_trainK")[0], {})
    for k, ev in entry["eval"].items():
      cells = []
      for s, r in ev["report"].items():
        cell = (f"{s} step{'s' if s != '1' else ''}: "
                f"{r['mse']:.3f} ± {r['ci95']:.3f}")
        if k == "K=5" and int(s) in paper:
          ref = paper[int(s)]
          inside = abs(r["mse"] - ref) <= r["ci95"]
          cell += (f" (paper {ref:.2f}, "
                   f"{'within' if inside else 'outside'} our 95% interval)")
        cells.append(cell)
      lines.append(f"{key:10s} {k:5s} MSE  {', '.join(cells)}")
  return "\n".join(lines)


def train_and_evaluate(config: configs.Config, workdir, *, data_dir=None,
                       progress: bool = True, devices=None) -> dict:
  """Trains MAML and the baseline, evaluates them, writes results and figure.

  Args:
    config: a validated :class:`configs.Config`.
    workdir: the prepared run folder (see :mod:`metajax.experiment.workdir`).
    data_dir: unused: sinusoid tasks are sampled, not read from files.
    progress: show progress bars.
    devices: shard each meta-batch over these devices (see
      :func:`metajax.fit`; ``None``: one device).

  Returns:
    The dict written to ``results.json``.
  """
  del data_dir
  started = time.time()
  workdir = pathlib.Path(workdir)
  cfg = config
  # One model trained with K = train_shots evaluated at every K, or with
  # train_per_k one model per evaluation K trained with that K.
  plan = ([(k, [k]) for k in cfg.eval_shots] if cfg.train_per_k
          else [(cfg.train_shots, list(cfg.eval_shots))])
  methods, for_figure = {}, {}
  with metrics_log.MetricsLog(workdir) as log:
    for name, learner in learners(cfg).items():
      for train_shots, eval_shots in plan:
        state, entry = train_model(cfg, name, learner, train_shots, workdir,
                                   log, progress, devices)
        for shots in eval_shots:
          entry["eval"][f"K={shots}"] = evaluate_k(cfg, learner, state.params,
                                                   shots)
          for_figure.setdefault(shots, {})[name] = (learner, state.params)
        methods[f"{name}_trainK{train_shots}" if cfg.train_per_k
                else name] = entry
  figure(workdir / FIGURE, for_figure, cfg)
  results = {
      "experiment": "sinusoid",
      "budget": common.budget(min(cfg.iterations, cfg.baseline_iters),
                              configs.PAPER_ITERATIONS),
      "paper_iterations": configs.PAPER_ITERATIONS,
      "setting": configs.setting(cfg),
      "config": config_lib.to_dict(cfg),
      "methods": methods,
      "paper_k5": PAPER_K5,
      "figure": FIGURE,
      "run": record.run_info(seed=cfg.seed, started=started,
                             finished=time.time(), devices=devices),
  }
  results = workdir_lib.jsonable(results)  # returned as written
  path = workdir_lib.write_results(workdir, results)
  print(summary(results))
  print(f"wrote {path} and {workdir / FIGURE} ({results['budget']} budget)")
  return results
