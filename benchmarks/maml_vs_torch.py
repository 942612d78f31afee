"""MAML meta-step speed and memory vs the PyTorch reference, same machine, same run.

    python benchmarks/maml_vs_torch.py [--configs sine_maml2 ...] [--torch /tmp/benchvenv/bin/python]
                                       [--max-steps N] [--rounds R] [--no-xla-defaults]
                                       [--out benchmarks/results_maml.json]

For each workload of ``../shared/bench/configs.json`` (same shapes: MLP
1-40-40-1 sinusoid MAML, conv-4 Omniglot 5-way/20-way MAML, first and second
order), a fresh subprocess builds the metajax learner, times the first
meta-step (compile) and then ``--max-steps`` steps (median, p25-p75 ms), and
reads its peak RSS. GFLOP/s divides the PyTorch harness's ``gflop_per_step``
(matmul + conv FLOPs of its loop implementation) by our time, so both sides
share one numerator. With ``--torch``, the reference harness
(``torch_ref.py``, PyTorch implementations given in ``--torch-impls``) runs
right after each JAX workload in the same session, and the JSON records the
same-run ratio torch_ms / jax_ms (> 1: metajax is faster). The reference's own
code is run, never copied. ``--rounds R`` repeats the whole sequence R times
and reports each workload's median ratio over the rounds and their range.

Workloads come from the harness's ``configs.json`` and from this folder's
``workloads.json`` (84x84x3 mini-ImageNet shapes, e.g. ``--configs
mini5w1s_maml2 mini5w5s_maml2``). The harness runs those through its own
command line with its ``load_configs`` pointed at a merged copy of both files.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT.parent / "shared" / "bench"
sys.path.insert(0, str(ROOT))  # this checkout's metajax, also for the scripts importing this one
sys.path.insert(0, str(ROOT / "benchmarks"))
MAML_CONFIGS = ("sine_maml2", "sine_maml1", "omni5w1s_maml2", "omni5w1s_maml1",
                "omni20w1s_maml2", "omni20w1s_maml1")

#: Child-code tail shared by the benchmark scripts: times the first call of
#: ``step(state, tasks)`` (compile) and ``max_steps`` more, prints one JSON line
#: (with the dict ``extra`` merged in).
TIME_STEPS = r'''
t0 = time.perf_counter(); state, m = step(state, tasks); jax.block_until_ready(m)
first = time.perf_counter() - t0
times = []
for _ in range(max_steps):
  t0 = time.perf_counter(); state, m = step(state, tasks); jax.block_until_ready(m)
  times.append(time.perf_counter() - t0)
ms = np.array(times) * 1e3
print(json.dumps({"first_step_s": first, "median_ms": float(np.median(ms)),
                  "p25_ms": float(np.percentile(ms, 25)), "p75_ms": float(np.percentile(ms, 75)),
                  "steps_timed": len(times), "last_loss": float(m["loss"]),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "xla_cpu": mj.xla_cpu.STATUS, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                  **extra}))
'''

CHILD = r'''
import json, os, resource, sys, time
sys.path.insert(0, "benchmarks")
import metajax as mj
import jax, numpy as np, optax
from gpu import workload_learner, workload_tasks

cfg = json.loads(sys.argv[1]); max_steps = int(sys.argv[2]); task_map = sys.argv[3]
tasks, learner = workload_tasks(cfg), workload_learner(cfg)
opt = optax.adam(1e-3)
state = mj.init_state(learner, opt, jax.random.PRNGKey(1), mj.task_slice(tasks, 0))
step = mj.make_meta_step(learner, opt, task_map=task_map,
                         chunk_size=1 if task_map == "map" else None, check=False)
extra = {"task_map": task_map}
''' + TIME_STEPS


def child_env(xla_defaults: bool = True) -> dict:
  """Environment for a benchmark child process: ``XLA_FLAGS`` as the user had
  them before metajax was imported here, and metajax's XLA:CPU setting on or
  off, so that the child applies (and reports) it itself."""
  from metajax import xla_cpu
  env = {**os.environ, "PYTHONPATH": str(ROOT), xla_cpu.OPT_OUT: "1" if xla_defaults else "0"}
  env.pop("XLA_FLAGS", None)
  if xla_cpu.USER_XLA_FLAGS is not None:
    env["XLA_FLAGS"] = xla_cpu.USER_XLA_FLAGS
  return env


def run_child(code: str, *args: str, xla_defaults: bool = True) -> dict:
  """Runs ``python -c code args...`` in :func:`child_env`; its last line of
  output, parsed as JSON."""
  out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       cwd=ROOT, env=child_env(xla_defaults))
  if out.returncode:
    raise RuntimeError(out.stderr[-3000:])
  return json.loads(out.stdout.strip().splitlines()[-1])


def add_rounds_argument(p: argparse.ArgumentParser) -> None:
  """``--rounds R``: every workload timed R times, round after round."""
  def positive(text):
    if not text.isdigit() or int(text) < 1:
      raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)
  p.add_argument("--rounds", type=positive, default=1,
                 help="time every workload (metajax, then PyTorch) this many times, "
                      "round after round, and report the median ratio and its range "
                      "(this machine's run-to-run noise is ~15%%)")


def record(results: dict, name: str, entry: dict, out: str) -> None:
  """Adds the same-run ratio to ``entry`` (when PyTorch ran), stores it under
  ``results['runs'][name]``, prints it and rewrites the JSON file ``out``.

  With ``results['rounds'] > 1`` each call is one round of the workload: the
  entries are kept in order under ``runs[name]['rounds']``, and ``runs[name]``
  also gets the medians over rounds (``jax_median_ms``, ``torch_best_ms``,
  ``speedup_vs_best_torch``: the median of the rounds' ratios) and the
  ratios' range (``speedup_range``)."""
  best = min((r["median_ms"] for r in entry.get("torch", {}).values() if "median_ms" in r),
             default=None)
  if best:
    entry["torch_best_ms"] = best
    entry["speedup_vs_best_torch"] = best / entry["jax"]["median_ms"]
  if results.get("rounds", 1) > 1:
    run = results["runs"].setdefault(name, {"rounds": []})
    run["rounds"].append(entry)
    rounds = run["rounds"]
    run["jax_median_ms"] = float(np.median([r["jax"]["median_ms"] for r in rounds]))
    ratios = [r["speedup_vs_best_torch"] for r in rounds if "speedup_vs_best_torch" in r]
    if ratios:
      run["torch_best_ms"] = float(np.median([r["torch_best_ms"] for r in rounds
                                              if "torch_best_ms" in r]))
      run["speedup_vs_best_torch"] = float(np.median(ratios))
      run["speedup_range"] = [min(ratios), max(ratios)]
  else:
    results["runs"][name] = entry
  print(name, json.dumps({k: v for k, v in entry.items() if k != "torch"}), flush=True)
  pathlib.Path(out).write_text(json.dumps(results, indent=2))


#: Runs the harness's command line with its ``load_configs`` reading the merged
#: workload file given as the first argument (its own code, our shapes).
TORCH_DRIVER = r'''
import sys
merged = sys.argv.pop(1)
sys.path.insert(0, sys.argv.pop(1))
import torch_ref
read = torch_ref.load_configs
torch_ref.load_configs = lambda path=None: read(merged)
sys.exit(torch_ref.main())
'''
#: the harness's ``--malloc-tune`` settings, given in the environment (the
#: harness re-executes itself to set them, which a ``-c`` driver cannot).
MALLOC_TUNE_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432",
                   "MALLOC_TRIM_THRESHOLD_": "17179869184"}


def load_specs() -> dict:
  """The harness's workloads and ``workloads.json``'s, in the harness's schema."""
  from gpu import load_workloads
  specs = load_workloads(BENCH / "torch_ref.py")
  raw = json.loads((BENCH / "configs.json").read_text())
  return {"defaults": raw["defaults"], "configs": specs["configs"], "matrix": specs["matrix"]}


def run_torch(python: str, name: str, impl: str, max_steps: int) -> dict:
  with tempfile.TemporaryDirectory() as d:
    res, merged = pathlib.Path(d) / "r.json", pathlib.Path(d) / "configs.json"
    specs = load_specs()
    merged.write_text(json.dumps({**specs, "configs": {
        k: {f: v for f, v in c.items() if f != "name"} for k, c in specs["configs"].items()}}))
    out = subprocess.run([python, "-c", TORCH_DRIVER, str(merged), str(BENCH), "--config", name,
                          "--impl", impl, "--malloc-tune", "--results", str(res),
                          "--max-steps", str(max_steps), "--min-steps", str(min(3, max_steps))],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **MALLOC_TUNE_ENV})
    if out.returncode:
      return {"error": out.stderr[-2000:]}
    runs = json.loads(res.read_text())["runs"]
    return runs[f"{name}|{impl}"]


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", nargs="+", default=list(MAML_CONFIGS))
  p.add_argument("--torch", help="python with torch 2.13 for the same-run reference")
  p.add_argument("--torch-impls", nargs="+", default=["loop", "vmap"])
  p.add_argument("--max-steps", type=int, default=8)
  add_rounds_argument(p)
  p.add_argument("--out", default=str(ROOT / "benchmarks" / "results_maml.json"))
  p.add_argument("--no-xla-defaults", action="store_true",
                 help="run metajax without its XLA:CPU flag (METAJAX_XLA_CPU_DEFAULTS=0)")
  args = p.parse_args(argv)
  from metajax.experiment import machine
  bench_spec = load_specs()
  configs, matrix = bench_spec["configs"], bench_spec["matrix"]
  ref_flops = json.loads((BENCH / "results_torch_malloc.json").read_text())["runs"]
  results = {"machine": machine.describe(), "method": __doc__.strip().splitlines()[0],
             "max_steps": args.max_steps, "rounds": args.rounds, "runs": {}}
  for name in [n for _ in range(args.rounds) for n in args.configs]:
    cfg = configs[name]
    task_map = "vmap" if cfg["task"] == "sinusoid" else "map"
    steps = args.max_steps * (25 if cfg["task"] == "sinusoid" else 1)
    gflop = ref_flops.get(f"{name}|loop", {}).get("gflop_per_step")
    entry = {"jax": run_child(CHILD, json.dumps(cfg), str(steps), task_map,
                              xla_defaults=not args.no_xla_defaults),
             "gflop_per_step_torch": gflop}
    if gflop:
      entry["jax"]["gflops"] = gflop / (entry["jax"]["median_ms"] / 1e3)
    if args.torch:
      impls = [i for i in args.torch_impls if i in matrix[name]]
      if "omni20" in name:
        impls = [i for i in impls if i != "vmap"]  # 30-60 s a step, 14-18 GiB
      entry["torch"] = {i: run_torch(args.torch, name, i, steps) for i in impls}
      if not gflop:  # a workload of ours: the same-run harness's own count
        gflop = next((r["gflop_per_step"] for r in entry["torch"].values()
                      if r.get("gflop_per_step")), None)
        entry["gflop_per_step_torch"] = gflop
        if gflop:
          entry["jax"]["gflops"] = gflop / (entry["jax"]["median_ms"] / 1e3)
    record(results, name, entry, args.out)


if __name__ == "__main__":
  main()
