"""Meta-train a CNP on 1-D GP functions and report its predictive log-likelihood.

    python -m experiments.gp_cnp                 # default budget (minutes on a CPU)
    python -m experiments.gp_cnp --iterations 200000   # the notebook's budget
    python -m experiments.gp_cnp --tiny --out /tmp/g   # seconds, for tests

Training follows DeepMind's neural-processes notebook: each batch draws 64
functions from a GP with a squared-exponential kernel (length scale 0.4),
a random number of context points (3..9) and of extra targets (2..9), the
targets including the context; Adam at 1e-4. Test tasks are functions on a
400-point grid with a random context subset, drawn from a fixed seed. The
result is the mean predictive log-likelihood per target point (and MSE of
the predictive mean) over the test tasks with a 95% interval, plus a figure
of the predictive mean and +-2 sigma band on a few test functions.

Context counts are host integers, so the compiled step is specialised to
each of the (at most 7 x 8) batch shapes once; all later steps reuse them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import jax
import numpy as np
import optax

import metajax as mj
from metajax.experiment import machine
from metajax.evaluation import stats
from metajax.algorithms.cnp import CNP, plot_predictions
from metajax.data import gp


@dataclasses.dataclass
class Config:
  iterations: int = 20_000
  meta_batch: int = 64
  meta_lr: float = 1e-4
  max_context: int = 10
  length_scale: float = 0.4
  eval_tasks: int = 600
  eval_seed: int = 1
  eval_batch: int = 100
  seed: int = 0
  log_every: int = 1000
  plots: int = 3


def tiny() -> Config:
  return Config(iterations=6, meta_batch=4, eval_tasks=8, eval_batch=4,
                log_every=3, plots=1)


def run(cfg: Config, out: pathlib.Path, *, progress: bool = True) -> dict:
  out.mkdir(parents=True, exist_ok=True)
  learner = CNP.paper()
  opt = optax.adam(cfg.meta_lr)
  init_key, key = jax.random.split(jax.random.PRNGKey(cfg.seed))
  sample = lambda k, n, **kw: gp.sample_tasks(
      k, n, max_context=cfg.max_context, length_scale=cfg.length_scale, **kw)
  first = sample(jax.random.fold_in(key, 0), cfg.meta_batch)
  state = mj.init_state(learner, opt, init_key,
                        mj.core.tasks.task_slice(first, 0))
  step = mj.make_meta_step(learner, opt)
  losses = []
  bar = None
  if progress:
    from tqdm.auto import tqdm
    bar = tqdm(total=cfg.iterations, desc="cnp")
  t0 = time.time()
  for i in range(cfg.iterations):
    state, metrics = step(state, sample(jax.random.fold_in(key, i), cfg.meta_batch))
    if (i + 1) % cfg.log_every == 0 or i + 1 == cfg.iterations:
      loss = float(metrics["loss"])
      if not np.isfinite(loss):
        raise mj.training.loop.NonFiniteLossError(f"CNP training loss is {loss} at step {i}")
      losses.append((i + 1, loss))
    if bar is not None:
      bar.update(1)
  train_s = time.time() - t0
  if bar is not None:
    bar.close()

  evaluate = jax.jit(jax.vmap(lambda t: learner.evaluate(state.params, t)))
  ll, mse = [], []
  ekey = jax.random.PRNGKey(cfg.eval_seed)
  for b in range(0, cfg.eval_tasks, cfg.eval_batch):
    n = min(cfg.eval_batch, cfg.eval_tasks - b)
    tasks = sample(jax.random.fold_in(ekey, b), n, testing=True)
    m = evaluate(tasks)
    ll.append(-np.asarray(m["loss"])[:, 0])
    mse.append(np.asarray(m["mse"])[:, 0])
  ll, mse = np.concatenate(ll), np.concatenate(mse)
  ll_mean, ll_ci = stats.mean_ci95(ll)
  mse_mean, mse_ci = stats.mean_ci95(mse)

  plot_tasks = sample(jax.random.fold_in(ekey, 10**6), cfg.plots, testing=True)
  figures = []
  for j in range(cfg.plots):
    t = mj.core.tasks.task_slice(plot_tasks, j)
    pred = learner.predict(state.params,
                           learner.adapt(state.params, t.support_x, t.support_y),
                           t.query_x)
    path = out / f"cnp_gp_{j}.png"
    plot_predictions(path, t.query_x, t.query_y, t.support_x, t.support_y,
                     pred.mean, pred.stddev,
                     title=f"CNP, {t.support_x.shape[0]} context points")
    figures.append(path.name)
  results = {
      "config": dataclasses.asdict(cfg),
      "learner": {k: (v if isinstance(v, (int, float, str)) else list(v))
                  for k, v in dataclasses.asdict(learner).items()},
      "train": {"seconds": round(train_s, 1), "loss_curve": losses},
      "test": {"num_tasks": int(ll.size),
               "log_likelihood_per_target": {"mean": float(ll_mean), "ci95": float(ll_ci)},
               "mse": {"mean": float(mse_mean), "ci95": float(mse_ci)}},
      "figures": figures,
      "machine": machine.describe(),
  }
  (out / "results.json").write_text(json.dumps(results, indent=2))
  return results


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tiny", action="store_true")
  p.add_argument("--iterations", type=int)
  p.add_argument("--eval-tasks", type=int)
  p.add_argument("--seed", type=int)
  p.add_argument("--out", default="runs/gp_cnp")
  p.add_argument("--no-progress", action="store_true")
  args = p.parse_args(argv)
  cfg = tiny() if args.tiny else Config()
  for f in ("iterations", "eval_tasks", "seed"):
    if getattr(args, f) is not None:
      setattr(cfg, f, getattr(args, f))
  out = pathlib.Path(args.out)
  r = run(cfg, out, progress=not args.no_progress)
  t = r["test"]
  print(f"CNP on GP regression: log-likelihood per target "
        f"{t['log_likelihood_per_target']['mean']:.3f} ± {t['log_likelihood_per_target']['ci95']:.3f}, "
        f"MSE {t['mse']['mean']:.4f} ± {t['mse']['ci95']:.4f} over {t['num_tasks']} tasks")
  print(f"wrote {out / 'results.json'}")
  return r


if __name__ == "__main__":
  main()
