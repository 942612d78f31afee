"""ProtoNet training-step speed and memory vs the PyTorch reference, same run.

    python benchmarks/protonet_vs_torch.py [--torch /tmp/benchvenv/bin/python]
                                           [--max-steps N] [--rounds R]
                                           [--out benchmarks/results_protonet.json]

The two ProtoNet workloads of ``../shared/bench/configs.json``
(``omni60w5s_proto``: 60-way 5-shot 5-query; ``omni5w5s_proto``: 5-way 5-shot
15-query; one episode a step, conv-4 with 64 filters and no head, support and
query embedded in one batch, Adam 1e-3) and ``workloads.json``'s
``mini5w5s_proto`` (the same at 84x84x3) are timed like
``maml_vs_torch.py``: a fresh subprocess per workload, compile time (first
step), median and p25-p75 ms of ``--max-steps`` steps, peak RSS, GFLOP/s from
the harness's ``gflop_per_step``; with ``--torch`` the harness's ``autograd``
implementation runs right after, in the same session. ``--rounds R`` repeats
the whole sequence R times and reports each workload's median ratio over the
rounds and their range.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from maml_vs_torch import (BENCH, TIME_STEPS, add_rounds_argument, load_specs,  # noqa: E402
                           record, run_child, run_torch)

CONFIGS = ("omni60w5s_proto", "omni5w5s_proto", "mini5w5s_proto")

CHILD = r'''
import json, os, resource, sys, time
sys.path.insert(0, "benchmarks")
import metajax as mj
import jax, numpy as np, optax
from gpu import workload_learner, workload_tasks

cfg = json.loads(sys.argv[1]); max_steps = int(sys.argv[2])
tasks, learner = workload_tasks(cfg), workload_learner(cfg)
opt = optax.adam(1e-3)
state = mj.init_state(learner, opt, jax.random.PRNGKey(1), mj.task_slice(tasks, 0))
step = mj.make_meta_step(learner, opt, task_map="map", chunk_size=1, check=False)
extra = {}
''' + TIME_STEPS


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--torch", help="python with torch 2.13 for the same-run reference")
  p.add_argument("--configs", nargs="+", default=list(CONFIGS))
  p.add_argument("--max-steps", type=int, default=30)
  add_rounds_argument(p)
  p.add_argument("--out", default=str(ROOT / "benchmarks" / "results_protonet.json"))
  args = p.parse_args(argv)
  from metajax.experiment import machine
  configs = load_specs()["configs"]
  ref_flops = json.loads((BENCH / "results_torch_malloc.json").read_text())["runs"]
  results = {"machine": machine.describe(), "method": __doc__.strip().splitlines()[0],
             "max_steps": args.max_steps, "rounds": args.rounds, "runs": {}}
  for name in [n for _ in range(args.rounds) for n in args.configs]:
    gflop = ref_flops.get(f"{name}|autograd", {}).get("gflop_per_step")
    entry = {"jax": run_child(CHILD, json.dumps(configs[name]), str(args.max_steps)),
             "gflop_per_step_torch": gflop}
    if gflop:
      entry["jax"]["gflops"] = gflop / (entry["jax"]["median_ms"] / 1e3)
    if args.torch:
      entry["torch"] = {"autograd": run_torch(args.torch, name, "autograd", args.max_steps)}
      if not gflop:  # a workload of ours: the same-run harness's own count
        gflop = entry["torch"]["autograd"].get("gflop_per_step")
        entry["gflop_per_step_torch"] = gflop
        if gflop:
          entry["jax"]["gflops"] = gflop / (entry["jax"]["median_ms"] / 1e3)
    record(results, name, entry, args.out)


if __name__ == "__main__":
  main()
