"""MAML vs a pretrained baseline on sinusoid regression, end to end.

    python -m experiments.sinusoid                # default budget (< 5 min on 2 CPU cores)
    python -m experiments.sinusoid --paper        # the paper's 70,000 meta-iterations
    python -m experiments.sinusoid --tiny --out /tmp/s   # seconds, for tests

Writes ``<out>/results.json`` (MSE after each inner step for K=5 and K=10 on
600 fixed test tasks, with 95% confidence intervals, for MAML and the
pretrained baseline) and ``<out>/sinusoid.png`` (MAML's Fig. 2: ground truth,
pre-update prediction, after 1 and 10 steps). Checkpoints go to
``<out>/checkpoints/<method>_K<shots>`` and an interrupted run resumes there.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import metajax as mj
from metajax.experiment import machine
from metajax.evaluation import stats
from metajax import training as train
from metajax.data import sinusoid
from metajax.models import MLP
from metajax.models.mlp import MAML_INIT
from experiments.sinusoid import config as config_lib

# MAML paper (Finn et al., 2017), K=5, read from its Fig. 3.
PAPER_K5 = {"maml": {1: 0.67, 5: 0.38, 10: 0.35},
            "pretrained": {1: 2.41, 5: 2.23, 10: 2.19}}


def learners(cfg: config_lib.Config):
  init = MAML_INIT if cfg.init == "maml" else MLP.kernel_init
  model = MLP(hidden=tuple(cfg.hidden), num_outputs=1, kernel_init=init)
  maml = mj.MAML(model, loss="mse", inner_steps=cfg.inner_steps,
                 inner_lr=cfg.inner_lr, first_order=cfg.first_order,
                 eval_inner_steps=cfg.eval_steps)
  # Zero inner steps: plain regression on every task's points ("pretrained
  # on all tasks"); at test time it is fine-tuned with the same inner loop.
  pretrained = dataclasses.replace(maml, inner_steps=0)
  return {"maml": maml, "pretrained": pretrained}


def evaluate(learner, params, cfg: config_lib.Config, shots: int):
  """Per-step MSE curves on ``cfg.eval_tasks`` fixed tasks with ``shots`` points."""
  query = cfg.eval_query or shots
  tasks = sinusoid.sample_tasks(
      jax.random.fold_in(jax.random.PRNGKey(cfg.eval_seed), shots),
      cfg.eval_tasks, shots, query)
  curves = jax.jit(jax.vmap(
      lambda t: learner.evaluate(params, t, steps=cfg.eval_steps)["loss"]))(tasks)
  return np.asarray(curves)  # (tasks, eval_steps + 1)


def figure(path, models_by_k, cfg: config_lib.Config):
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


def _train_and_eval(cfg, name, learner, train_shots, eval_shots, out, progress):
  iters = cfg.iterations if name == "maml" else cfg.baseline_iters
  sample = lambda rng: sinusoid.sample_tasks(rng, cfg.meta_batch, train_shots,
                                             cfg.train_query)
  t0 = time.time()
  state, hist = train.fit(
      learner, optax.adam(cfg.meta_lr), sample, num_steps=iters, seed=cfg.seed,
      steps_per_call=cfg.steps_per_call,
      checkpoint_dir=out / "checkpoints" / f"{name}_K{train_shots}",
      checkpoint_every=cfg.checkpoint_every, progress=progress,
      desc=f"{name} (K={train_shots})")
  entry = {"iterations": iters, "train_shots": train_shots,
           "train_seconds": round(time.time() - t0, 2),
           "final_train_loss": float(np.mean(hist["loss"][-1000:])), "eval": {}}
  for shots in eval_shots:
    curves = evaluate(learner, state.params, cfg, shots)
    mean, ci = stats.mean_ci95(curves)
    entry["eval"][f"K={shots}"] = {
        "mse_by_step": [float(m) for m in mean],
        "ci95_by_step": [float(c) for c in ci],
        "median_by_step": [float(m) for m in np.median(curves, 0)],
        # Tasks whose MSE grew above 10x their pre-update MSE: repeated
        # steps of the meta-training step size overshoot on them.
        "diverged_tasks_by_step": [int(n) for n in np.sum(
            ~(curves <= 10 * curves[:, :1]), 0)],
        "report": {str(s): {"mse": float(mean[s]), "ci95": float(ci[s])}
                   for s in cfg.report_steps},
    }
  return state.params, entry


def run(cfg: config_lib.Config, out: pathlib.Path, *, progress: bool = True):
  """Trains MAML and the baseline, evaluates, writes JSON and figure."""
  out.mkdir(parents=True, exist_ok=True)
  results = {"config": dataclasses.asdict(cfg), "machine": machine.describe(),
             "paper_k5": PAPER_K5, "methods": {}}
  # One model trained with K = cfg.train_shots evaluated at every K, or with
  # train_per_k one model per evaluation K trained with that K.
  plan = ([(k, [k]) for k in cfg.eval_shots] if cfg.train_per_k
          else [(cfg.train_shots, list(cfg.eval_shots))])
  for_figure = {}
  for name, learner in learners(cfg).items():
    for train_shots, eval_shots in plan:
      params, entry = _train_and_eval(cfg, name, learner, train_shots,
                                      eval_shots, out, progress)
      key = f"{name}_trainK{train_shots}" if cfg.train_per_k else name
      results["methods"][key] = entry
      for k in eval_shots:
        for_figure.setdefault(k, {})[name] = (learner, params)
  figure(out / "sinusoid.png", for_figure, cfg)
  (out / "results.json").write_text(json.dumps(results, indent=2))
  return results


def summary(results) -> str:
  lines = []
  for name, entry in results["methods"].items():
    for k, ev in entry["eval"].items():
      cells = ", ".join(f"{s} step{'s' if s != '1' else ''}: {r['mse']:.3f} ± {r['ci95']:.3f}"
                        for s, r in ev["report"].items())
      lines.append(f"{name:10s} {k:5s} MSE  {cells}")
  return "\n".join(lines)


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--paper", action="store_true",
                 help="the paper's budget: 70,000 meta-iterations")
  p.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
  p.add_argument("--iterations", type=int, help="meta-training iterations")
  p.add_argument("--baseline-iterations", type=int)
  p.add_argument("--first-order", action="store_true", help="first-order MAML")
  p.add_argument("--train-per-k", action="store_true",
                 help="train one model per evaluation K (with that K) instead "
                      "of one K=10 model evaluated at every K")
  p.add_argument("--inner-lr", type=float, help="inner step size alpha (0.01)")
  p.add_argument("--eval-tasks", type=int)
  p.add_argument("--seed", type=int)
  p.add_argument("--out", default="runs/sinusoid", help="output directory")
  p.add_argument("--no-progress", action="store_true")
  args = p.parse_args(argv)
  cfg = (config_lib.tiny() if args.tiny else
         config_lib.paper() if args.paper else config_lib.Config())
  for field, value in (("iterations", args.iterations),
                       ("baseline_iterations", args.baseline_iterations),
                       ("eval_tasks", args.eval_tasks), ("seed", args.seed),
                       ("inner_lr", args.inner_lr)):
    if value is not None:
      setattr(cfg, field, value)
  cfg.first_order = cfg.first_order or args.first_order
  cfg.train_per_k = cfg.train_per_k or args.train_per_k
  return cfg, pathlib.Path(args.out), not args.no_progress


def main(argv=None):
  cfg, out, progress = parse(argv)
  results = run(cfg, out, progress=progress)
  print(summary(results))
  print(f"wrote {out / 'results.json'} and {out / 'sinusoid.png'}")
  return results


if __name__ == "__main__":
  main()
