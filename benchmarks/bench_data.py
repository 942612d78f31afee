"""Data pipeline benchmark: Omniglot load (cold / cached) and sampler throughput.

Measures, on the machine it runs on:

* loading all 1623 Omniglot characters at 28x28 (``load_omniglot``) cold
  (decode + resize + write the ``.npy`` cache into a fresh cache dir) and
  warm (read the cache), median of several warm loads;
* episodes (tasks) per second of the compiled on-device sampler,
  ``EpisodeSampler(...)(key)`` with the result blocked on, for 5-way 1-shot
  x 32 tasks and 20-way 5-shot x 16 tasks (15 queries per class), with
  MAML's per-task rotations and ProtoNets' rotations-as-classes, on the
  MAML training split (1100 characters);
* Lake's modified-Hausdorff baseline on the 20 one-shot runs (the evaluator
  end to end on real data; Lake's demo reports 38.8% error).

Usage::

  python benchmarks/bench_data.py --data-dir ../shared/data \
      [--out benchmarks/results_data.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metajax import evaluation
from metajax.data import datadir, omniglot, sampler, splits  # noqa: E402


def machine() -> dict:
  cpu = "unknown"
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return {
      "cpu_model": cpu,
      "cpu_cores": os.cpu_count(),
      "load_average_at_start": list(os.getloadavg()),
      "jax_version": jax.__version__,
      "jax_backend": jax.default_backend(),
      "devices": [str(d) for d in jax.devices()],
      "numpy_version": np.__version__,
      "python": platform.python_version(),
      "platform": platform.platform(),
  }


def bench_loading(data_dir, repeats: int) -> dict:
  found = omniglot.find_sources(data_dir)
  source = "original" if {"background", "evaluation"} <= set(
      found["original"]) else "npz"
  with tempfile.TemporaryDirectory() as cache:
    t = time.perf_counter()
    data = omniglot.load_omniglot(data_dir, source=source, cache_dir=cache)
    cold = time.perf_counter() - t
    warm = []
    for _ in range(repeats):
      t = time.perf_counter()
      omniglot.load_omniglot(data_dir, source=source, cache_dir=cache)
      warm.append(time.perf_counter() - t)
  return {
      "source": source,
      "shape": list(data.images.shape),
      "megabytes_float32": round(data.images.nbytes / 2**20, 1),
      "cold_s": round(cold, 3),
      "warm_s_median": round(statistics.median(warm), 4),
      "warm_s_all": [round(w, 4) for w in warm],
  }, data


def bench_sampler(data: omniglot.OmniglotData, data_dir, seconds: float
                  ) -> list[dict]:
  train = splits.split_omniglot(data, "maml", data_dir=data_dir).train
  ep_data = sampler.EpisodeData.from_dense(train.images)
  out = []
  for ways, shots, queries, tasks in ((5, 1, 15, 32), (20, 5, 15, 16)):
    for rotation in ("per_task", "classes"):
      s = sampler.EpisodeSampler(ep_data, ways=ways, shots=shots,
                                 queries=queries, num_tasks=tasks,
                                 rotation=rotation)
      t = time.perf_counter()
      jax.block_until_ready(s(jax.random.key(0)))
      compile_s = time.perf_counter() - t
      calls, key = 0, jax.random.key(1)
      t = time.perf_counter()
      while time.perf_counter() - t < seconds:
        key, sub = jax.random.split(key)
        jax.block_until_ready(s(sub))
        calls += 1
      dt = time.perf_counter() - t
      out.append({
          "ways": ways, "shots": shots, "queries": queries,
          "tasks_per_call": tasks, "rotation": rotation,
          "classes": int(train.images.shape[0]),
          "first_call_s": round(compile_s, 3),
          "calls": calls, "ms_per_call": round(1e3 * dt / calls, 3),
          "episodes_per_s": round(calls * tasks / dt, 1),
      })
      print(out[-1], flush=True)
  return out


def bench_lake(data_dir) -> dict:
  t = time.perf_counter()
  runs = evaluation.load_lake_runs(data_dir=data_dir)
  load_s = time.perf_counter() - t
  t = time.perf_counter()
  r = evaluation.lake_one_shot(evaluation.modified_hausdorff_matcher, runs,
                               kind="cost")
  return {"matcher": "modified_hausdorff", "mean_error_percent":
          round(r.mean_error, 3), "ci95": round(r.ci95, 3),
          "published_percent": 38.8, "load_s": round(load_s, 3),
          "eval_s": round(time.perf_counter() - t, 2),
          "errors_per_run": r.errors}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  datadir.add_data_dir_flag(parser, cache=False)
  parser.add_argument("--out", default=str(Path(__file__).with_name(
      "results_data.json")))
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--seconds", type=float, default=3.0,
                      help="timing window per sampler configuration")
  parser.add_argument("--skip-lake", action="store_true")
  args = parser.parse_args(argv)
  data_dir = datadir.resolve_data_dir(args.data_dir, dataset="omniglot")
  result = {"machine": machine()}
  result["omniglot_load"], data = bench_loading(data_dir, args.repeats)
  print(result["omniglot_load"], flush=True)
  result["sampler"] = bench_sampler(data, data_dir, args.seconds)
  if not args.skip_lake:
    result["lake_one_shot"] = bench_lake(data_dir)
    print({k: v for k, v in result["lake_one_shot"].items()
           if k != "errors_per_run"})
  Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
