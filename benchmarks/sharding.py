"""Throughput of a sharded conv-4 MAML meta-step on 1, 2, 4 and 8 host devices.

    python benchmarks/sharding.py [--devices 1 2 4 8] [--meta-batch 8]
        [--max-steps 5] [--out benchmarks/results_sharding.json]

Workload: conv-4 (64 filters, max-pool), MAML 5-way 1-shot, 15 queries,
second order, one inner step of 0.4, a meta-batch of ``--meta-batch`` random
28 x 28 x 1 tasks mapped one at a time on each device
(``task_map='map'``). Each device count runs in its own process started with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` and the meta-batch
split over ``N`` devices (``make_meta_step(devices=N)``).

On a CPU the host devices share the same cores, so this measures the cost
of the sharded code path (per-device programs, the all-reduce), not a
speed-up: with 2 cores, 8 host devices cannot be faster than 1. On a
machine with N accelerators the same script measures the scaling. The JSON
records the machine, compile time, ms per meta-step (median, p25-p75) and
tasks per second per device count.
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

CHILD = r'''
import json, sys, time
import metajax as mj
import jax, jax.numpy as jnp, numpy as np, optax
from metajax.models import Conv4

devices, meta_batch, max_steps = json.loads(sys.argv[1])
ways, shots, queries = 5, 1, 15
k1, k2 = jax.random.split(jax.random.PRNGKey(0))
lab = lambda n: jnp.tile(jnp.repeat(jnp.arange(ways, dtype=jnp.int32), n), (meta_batch, 1))
tasks = mj.Task(jax.random.normal(k1, (meta_batch, ways * shots, 28, 28, 1)), lab(shots),
                jax.random.normal(k2, (meta_batch, ways * queries, 28, 28, 1)), lab(queries))
learner = mj.MAML(Conv4(ways, filters=64), loss="cross_entropy", inner_steps=1, inner_lr=0.4)
opt = optax.adam(1e-3)
state = mj.init_state(learner, opt, jax.random.PRNGKey(1), mj.task_slice(tasks, 0))
step = mj.make_meta_step(learner, opt, task_map="map", chunk_size=1,
                         devices=None if devices == 1 else devices)
t0 = time.perf_counter(); state, m = step(state, tasks); jax.block_until_ready(m)
first = time.perf_counter() - t0
times = []
for _ in range(max_steps):
  t0 = time.perf_counter(); state, m = step(state, tasks); jax.block_until_ready(m)
  times.append(time.perf_counter() - t0)
ms = np.array(times) * 1e3
print(json.dumps({"devices": devices, "meta_batch": meta_batch,
                  "device_count": len(jax.devices()), "first_step_s": first,
                  "median_ms": float(np.median(ms)),
                  "p25_ms": float(np.percentile(ms, 25)),
                  "p75_ms": float(np.percentile(ms, 75)),
                  "tasks_per_s": meta_batch / float(np.median(ms)) * 1e3,
                  "last_loss": float(m["loss"])}))
'''


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
  parser.add_argument("--meta-batch", type=int, default=8)
  parser.add_argument("--max-steps", type=int, default=5)
  parser.add_argument("--out", default=str(ROOT / "benchmarks" /
                                           "results_sharding.json"))
  args = parser.parse_args(argv)
  sys.path.insert(0, str(ROOT))
  from metajax.experiment import machine
  results = {"workload": "conv-4 MAML 5-way 1-shot, second order, 1 inner "
                         "step, tasks mapped one at a time per device",
             "machine": machine.describe(), "date": time.strftime("%Y-%m-%d"),
             "runs": []}
  for n in args.devices:
    env = dict(os.environ, PYTHONPATH=str(ROOT),
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                          f" --xla_force_host_platform_device_count={n}"
                          ).strip())
    out = subprocess.run(
        [sys.executable, "-c", CHILD,
         json.dumps([n, args.meta_batch, args.max_steps])],
        capture_output=True, text=True, cwd=ROOT, env=env)
    row = (json.loads(out.stdout.strip().splitlines()[-1]) if not out.returncode
           else {"devices": n, "error": out.stderr.strip()[-500:]})
    results["runs"].append(row)
    print(json.dumps(row), flush=True)
    pathlib.Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
