"""Meta-train and evaluate one learner on few-shot Omniglot.

    python -m experiments.omniglot --method maml                      # 5-way 1-shot
    python -m experiments.omniglot --method protonet --ways 20 --shots 5
    python -m experiments.omniglot --method maml --tiny --out /tmp/o  # seconds, for tests
    python -m experiments.omniglot --table results/omniglot_5w1s     # markdown table of runs

Every method sees the same protocol, spelled out in the results file: the
class split (``--split``, Vinyals by default), the rotation policy
(``--rotation``, rotations as new classes by default, as ProtoNets), N-way
K-shot Q-query episodes sampled on device, and the same ``--eval-tasks``
(600) test tasks drawn from ``--eval-seed``, so accuracies are paired.
The backbone is conv-4 (``--filters``); optimisation-based learners get a
linear head, metric and closed-form learners use the features.

Writes ``<out>/results.json`` (protocol, learner settings, training time and
curve, test accuracy with a 95% interval and its per-inner-step curve,
machine) and checkpoints to ``<out>/checkpoints`` (an interrupted run
resumes).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import jax
import numpy as np

from metajax import evaluation
from metajax.algorithms import registry as learners
from metajax.experiment import machine
from metajax import training as train
from metajax.data import datadir, omniglot, sampler, splits
from experiments.omniglot import config as config_lib


def build(cfg: config_lib.Config):
  """(learner, outer optimiser) for ``cfg.method``."""
  spec = config_lib.method_spec(cfg.method)
  model = config_lib.backbone(cfg, head=spec.head)
  learner = learners.make(cfg.method, model, **spec.learner_kwargs(cfg))
  return learner, spec.optimizer(cfg, learner)


def load_split(cfg: config_lib.Config, data_dir, cache_dir):
  data = omniglot.load_omniglot(data_dir, size=cfg.image_size,
                                cache_dir=cache_dir)
  return splits.split_omniglot(data, cfg.split, data_dir=data_dir)


def run(cfg: config_lib.Config, out: pathlib.Path, *, data_dir=None,
        cache_dir=None, progress: bool = True) -> dict:
  out.mkdir(parents=True, exist_ok=True)
  split = load_split(cfg, data_dir, cache_dir)
  train_sampler = sampler.EpisodeSampler(
      split.train, ways=cfg.ways, shots=cfg.shots, queries=cfg.queries,
      num_tasks=cfg.meta_batch, rotation=cfg.rotation)
  test_sampler = sampler.EpisodeSampler(
      split.test, ways=cfg.ways, shots=cfg.shots, queries=cfg.queries,
      rotation=cfg.rotation)
  learner, optimizer = build(cfg)
  t0 = time.time()
  state, hist = train.fit(
      learner, optimizer, train_sampler, num_steps=cfg.iterations,
      seed=cfg.seed, steps_per_call=cfg.steps_per_call,
      task_map=cfg.task_map, chunk_size=cfg.chunk_size,
      checkpoint_dir=out / "checkpoints",
      checkpoint_every=cfg.checkpoint_every, progress=progress,
      desc=cfg.method)
  train_s = time.time() - t0
  t0 = time.time()
  result = evaluation.evaluate(
      learner, state.params, test_sampler, num_tasks=cfg.eval_tasks,
      seed=cfg.eval_seed, steps=cfg.eval_steps, batch_size=cfg.eval_batch,
      config={"sampler": test_sampler.config()})
  eval_s = time.time() - t0
  n = len(hist["loss"])
  window = max(1, n // 10)
  results = {
      "method": cfg.method,
      "config": dataclasses.asdict(cfg),
      "learner": config_lib.describe(learner),
      "protocol": {"split": cfg.split, "rotation": cfg.rotation,
                   "train_classes": int(split.train.images.shape[0]),
                   "test_classes": int(split.test.images.shape[0]),
                   "train_sampler": train_sampler.config(),
                   "test_sampler": test_sampler.config()},
      "train": {"seconds": round(train_s, 1), "iterations": n,
                "loss_first": float(np.mean(hist["loss"][:window])),
                "loss_last": float(np.mean(hist["loss"][-window:]))},
      "test": result.to_dict(),
      "eval_seconds": round(eval_s, 1),
      "machine": machine.describe(),
  }
  for k in ("accuracy", "pre_accuracy"):
    if k in hist:
      results["train"][f"{k}_last"] = float(np.mean(hist[k][-window:]))
  (out / "results.json").write_text(json.dumps(results, indent=2))
  return results


def table(root: pathlib.Path) -> str:
  """A markdown table of every ``*/results.json`` under ``root``."""
  rows = []
  for path in sorted(root.glob("*/results.json")):
    r = json.loads(path.read_text())
    t = r["test"]
    rows.append(
        f"| {r['method']} | {100 * t['mean']:.2f} ± {100 * t['ci95']:.2f} | "
        f"{t['steps'] if t['steps'] is not None else '-'} | {r['train']['iterations']} | "
        f"{r['config']['meta_batch']} | {r['train']['loss_first']:.3f} -> "
        f"{r['train']['loss_last']:.3f} | {r['train']['seconds']:.0f} |")
  head = ("| method | test accuracy % (95% CI) | inner steps at test | "
          "iterations | tasks/step | train loss first -> last 10% | train s |\n"
          "|---|---|---|---|---|---|---|")
  return "\n".join([head] + rows)


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--method", default="maml",
                 help=f"one of {', '.join(config_lib.METHODS)}")
  p.add_argument("--tiny", action="store_true", help="seconds-long smoke run")
  p.add_argument("--table", metavar="DIR",
                 help="print a markdown table of the runs under DIR and exit")
  for field in dataclasses.fields(config_lib.Config):
    if field.name in ("method",):
      continue
    flag = "--" + field.name.replace("_", "-")
    kind = type(field.default) if field.default is not None else int
    p.add_argument(flag, type=kind, default=None, help=f"(default {field.default})")
  datadir.add_data_dir_flag(p)
  p.add_argument("--out", help="output directory (default runs/omniglot/<method>)")
  p.add_argument("--no-progress", action="store_true")
  return p.parse_args(argv)


def main(argv=None):
  args = parse(argv)
  if args.table:
    text = table(pathlib.Path(args.table))
    print(text)
    return text
  cfg = config_lib.tiny(args.method) if args.tiny else config_lib.Config(method=args.method)
  for field in dataclasses.fields(config_lib.Config):
    value = getattr(args, field.name, None)
    if value is not None and field.name != "method":
      setattr(cfg, field.name, value)
  config_lib.method_spec(cfg.method)  # unknown method: clear error before loading data
  data_dir = datadir.resolve_data_dir(args.data_dir)
  out = pathlib.Path(args.out or f"runs/omniglot/{cfg.method}")
  results = run(cfg, out, data_dir=data_dir,
                cache_dir=getattr(args, "cache_dir", None),
                progress=not args.no_progress)
  t = results["test"]
  print(f"{cfg.method}: {cfg.ways}-way {cfg.shots}-shot test {t['metric']} "
        f"{100 * t['mean']:.2f} ± {100 * t['ci95']:.2f} % over {t['num_tasks']} tasks")
  print(f"wrote {out / 'results.json'}")
  return results


if __name__ == "__main__":
  main()
