"""Memory and time of a conv-4 MAML meta-step against the number of inner steps.

    python benchmarks/remat_memory.py [--steps 1 5 10 20 50 100]
        [--policies none step sqrt conv first_order imaml]
        [--meta-batch 4] [--max-steps 3] [--out benchmarks/results_remat_memory.json]
        [--plot benchmarks/remat_memory.png]

Workload: conv-4 (64 filters, max-pool, transductive batch norm), 5-way
1-shot, 15 queries per class, 28 x 28 x 1 random inputs, inner step 0.4, a
meta-batch of ``--meta-batch`` tasks mapped one at a time (``lax.map``, as
the Omniglot experiments do on CPU, so memory is one task's), Adam outer
step; the inner loop scanned (``unroll=False``: compile time does not grow
with the steps). Policies:

* ``none``: exact second order, no rematerialisation;
* ``step``, ``sqrt``, ``conv``: exact second order with
  ``MAML(remat=...)`` (:mod:`metajax.core.remat`);
* ``first_order``: first-order MAML (no second-order term);
* ``imaml``: iMAML, proximal inner loop and 5 conjugate-gradient steps
  (memory independent of the path by construction).

Each (policy, inner steps) pair runs in its own fresh process, which
records:

* ``xla_temp_mib``: the scratch memory XLA's buffer assignment gives the
  compiled meta-step (``compiled.memory_analysis()``): exact and
  deterministic; the number the plot shows;
* ``peak_rss_mib`` / ``rss_before_run_mib``: the process's peak resident
  memory while the timed steps run (sampled every millisecond) and just
  before them, on CPU (compilation's own memory is excluded);
* on GPU, ``device_peak_mib`` from ``device.memory_stats()``;
* compile time (first step) and ms per meta-step (median, p25-p75).

A configuration that runs out of memory or time is recorded with its error.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

POLICIES = ("none", "step", "sqrt", "conv", "first_order", "imaml")

CHILD = r'''
import json, os, resource, sys, threading, time
import metajax as mj
import jax, jax.numpy as jnp, numpy as np, optax
from metajax.models import Conv4

policy, inner_steps, meta_batch, max_steps = json.loads(sys.argv[1])
ways, shots, queries = 5, 1, 15
k1, k2 = jax.random.split(jax.random.PRNGKey(0))
lab = lambda n: jnp.tile(jnp.repeat(jnp.arange(ways, dtype=jnp.int32), n), (meta_batch, 1))
tasks = mj.Task(jax.random.normal(k1, (meta_batch, ways * shots, 28, 28, 1)), lab(shots),
                jax.random.normal(k2, (meta_batch, ways * queries, 28, 28, 1)), lab(queries))
model = Conv4(ways, filters=64)
if policy == "imaml":
  learner = mj.IMAML(model, loss="cross_entropy", inner_steps=inner_steps,
                     inner_lr=0.4, lam=2.0, cg_steps=5)
else:
  learner = mj.MAML(model, loss="cross_entropy", inner_steps=inner_steps, inner_lr=0.4,
                    first_order=policy == "first_order", unroll=False,
                    remat={"none": False, "first_order": False, "step": True,
                           "sqrt": "sqrt", "conv": "conv"}[policy])
opt = optax.adam(1e-3)
state = mj.init_state(learner, opt, jax.random.PRNGKey(1), mj.task_slice(tasks, 0))
step = mj.make_meta_step(learner, opt, task_map="map", chunk_size=1, check=False)
t0 = time.perf_counter()
compiled = step.jitted.lower(state, tasks).compile()
compile_s = time.perf_counter() - t0
analysis = compiled.memory_analysis()

def rss_mib():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

peak = [0.0]
done = threading.Event()
def sample():
  while not done.is_set():
    peak[0] = max(peak[0], rss_mib()); time.sleep(0.001)

state, m = compiled(state, tasks); jax.block_until_ready(m)  # warm-up
before = rss_mib()
thread = threading.Thread(target=sample); thread.start()
times = []
for _ in range(max_steps):
  t0 = time.perf_counter(); state, m = compiled(state, tasks); jax.block_until_ready(m)
  times.append(time.perf_counter() - t0)
done.set(); thread.join()
ms = np.array(times) * 1e3
device = jax.devices()[0]
stats = device.memory_stats() if device.platform != "cpu" else None
print(json.dumps({
    "policy": policy, "inner_steps": inner_steps, "meta_batch": meta_batch,
    "compile_s": compile_s, "median_ms": float(np.median(ms)),
    "p25_ms": float(np.percentile(ms, 25)), "p75_ms": float(np.percentile(ms, 75)),
    "steps_timed": len(times), "last_loss": float(m["loss"]),
    "xla_temp_mib": analysis.temp_size_in_bytes / 2**20,
    "xla_argument_mib": analysis.argument_size_in_bytes / 2**20,
    "rss_before_run_mib": before, "peak_rss_mib": max(peak[0], before),
    "device_peak_mib": (stats or {}).get("peak_bytes_in_use", 0) / 2**20 or None,
    "platform": device.platform, "device_kind": device.device_kind}))
'''


def run_one(policy: str, inner_steps: int, meta_batch: int, max_steps: int,
            timeout: float) -> dict:
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  try:
    out = subprocess.run(
        [sys.executable, "-c", CHILD,
         json.dumps([policy, inner_steps, meta_batch, max_steps])],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"policy": policy, "inner_steps": inner_steps,
            "error": f"over {timeout:.0f} s"}
  if out.returncode:
    return {"policy": policy, "inner_steps": inner_steps,
            "error": out.stderr.strip().splitlines()[-1][-500:]}
  return json.loads(out.stdout.strip().splitlines()[-1])


def plot(results: dict, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for policy in results["policies"]:
    rows = sorted((r for r in results["runs"]
                   if r["policy"] == policy and "error" not in r),
                  key=lambda r: r["inner_steps"])
    if not rows:
      continue
    steps = [r["inner_steps"] for r in rows]
    axes[0].plot(steps, [r["xla_temp_mib"] for r in rows], "o-", label=policy)
    axes[1].plot(steps, [r["median_ms"] for r in rows], "o-", label=policy)
  axes[0].set(xlabel="inner steps", ylabel="XLA scratch memory (MiB)",
              title="memory per meta-step")
  axes[1].set(xlabel="inner steps", ylabel="ms per meta-step (median)",
              title=f"time ({results['meta_batch']} tasks, "
              f"{results['machine'].get('cpu', results['platform'])})")
  for ax in axes:
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
  axes[1].set_yscale("log")
  axes[0].legend()
  fig.suptitle("conv-4 MAML 5-way 1-shot: memory and time vs inner steps")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, nargs="+",
                      default=[1, 5, 10, 20, 50, 100])
  parser.add_argument("--policies", nargs="+", default=list(POLICIES),
                      choices=POLICIES)
  parser.add_argument("--meta-batch", type=int, default=4)
  parser.add_argument("--max-steps", type=int, default=3)
  parser.add_argument("--timeout", type=float, default=600,
                      help="seconds per (policy, steps) process")
  parser.add_argument("--out", default=str(ROOT / "benchmarks" /
                                           "results_remat_memory.json"))
  parser.add_argument("--plot", default=str(ROOT / "benchmarks" /
                                            "remat_memory.png"))
  args = parser.parse_args(argv)
  sys.path.insert(0, str(ROOT))
  from metajax.experiment import machine
  import jax
  results = {"workload": "conv-4 MAML 5-way 1-shot, 15 queries, 28x28x1, "
                         "inner lr 0.4, scanned inner loop, tasks mapped one "
                         "at a time",
             "meta_batch": args.meta_batch, "policies": args.policies,
             "platform": jax.default_backend(),
             "machine": machine.describe(),
             "date": time.strftime("%Y-%m-%d"), "runs": []}
  for inner_steps in args.steps:
    for policy in args.policies:
      row = run_one(policy, inner_steps, args.meta_batch, args.max_steps,
                    args.timeout)
      results["runs"].append(row)
      print(json.dumps(row), flush=True)
      pathlib.Path(args.out).write_text(json.dumps(results, indent=2))
  by = {(r["policy"], r["inner_steps"]): r for r in results["runs"]
        if "error" not in r}
  summary = {}
  for policy in args.policies:
    if (policy, 5) in by and (policy, 50) in by:
      summary[policy] = {
          "memory_50_over_5": by[(policy, 50)]["xla_temp_mib"] /
                              by[(policy, 5)]["xla_temp_mib"],
          "time_50_over_5": by[(policy, 50)]["median_ms"] /
                            by[(policy, 5)]["median_ms"]}
  if ("none", 5) in by:
    for policy in args.policies:
      if (policy, 50) in by:
        summary.setdefault(policy, {})["memory_50_over_plain_5"] = (
            by[(policy, 50)]["xla_temp_mib"] / by[("none", 5)]["xla_temp_mib"])
  results["summary"] = summary
  pathlib.Path(args.out).write_text(json.dumps(results, indent=2))
  if args.plot:
    plot(results, pathlib.Path(args.plot))
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  main()
