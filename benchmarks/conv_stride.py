"""Conv-4 MAML meta-step with stride-2 convolutions: metajax's custom rules vs XLA's.

    python benchmarks/conv_stride.py [--max-steps 5] [--configs 5w1s 20w1s]
                                     [--out benchmarks/results_conv_stride.json]

Workloads (float32, second order, one inner step, 64 filters, 28 x 28 x 1
inputs, 1 shot, 15 queries per class, tasks mapped one at a time as in
``maml_vs_torch.py``): 5-way with meta-batch 4 and 20-way with meta-batch 2.
Each runs, in its own fresh process, with three backbones:

* ``maxpool``: :class:`metajax.models.Conv4` with 2x2 max-pools (stride-1
  convolutions on :func:`metajax.models.ops.conv2d`);
* ``stride``: ``Conv4(downsample='stride')`` on ``ops.conv2d``'s custom
  stride-2 rules (the default);
* ``stride_lax``: the same network with ``ops.IMPL = 'lax'``, i.e.
  ``lax.conv_general_dilated`` and XLA's own gradients (what ``Conv`` used
  for strides > 1 before).

The JSON records, per workload and backbone, compile time (first step) and
ms per meta-step (median, p25-p75 of ``--max-steps`` steps), and the
speed-ups ``stride_lax / stride`` and ``maxpool / stride``.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from maml_vs_torch import TIME_STEPS, run_child  # noqa: E402

#: name -> (ways, meta_batch, inner_lr)
CONFIGS = {"5w1s": (5, 4, 0.4), "20w1s": (20, 2, 0.1)}
#: backbone -> (Conv4 downsample, ops.IMPL)
BACKBONES = {"maxpool": ("maxpool", "custom"), "stride": ("stride", "custom"),
             "stride_lax": ("stride", "lax")}

CHILD = r'''
import json, os, resource, sys, time
import metajax as mj
import jax, jax.numpy as jnp, numpy as np, optax
from metajax.models import Conv4, ops

ways, meta_batch, inner_lr, downsample, impl, max_steps = json.loads(sys.argv[1])
ops.IMPL = impl
shots, queries = 1, 15
k1, k2 = jax.random.split(jax.random.PRNGKey(0))
lab = lambda n: jnp.tile(jnp.repeat(jnp.arange(ways, dtype=jnp.int32), n), (meta_batch, 1))
tasks = mj.Task(jax.random.normal(k1, (meta_batch, ways * shots, 28, 28, 1)), lab(shots),
                jax.random.normal(k2, (meta_batch, ways * queries, 28, 28, 1)), lab(queries))
learner = mj.MAML(Conv4(ways, filters=64, downsample=downsample), loss="cross_entropy",
                  inner_steps=1, inner_lr=inner_lr, first_order=False)
opt = optax.adam(1e-3)
state = mj.init_state(learner, opt, jax.random.PRNGKey(1), mj.task_slice(tasks, 0))
step = mj.make_meta_step(learner, opt, task_map="map", chunk_size=1, check=False)
extra = {"downsample": downsample, "impl": impl}
''' + TIME_STEPS


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
  p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
  p.add_argument("--max-steps", type=int, default=5)
  p.add_argument("--out", default=str(ROOT / "benchmarks" / "results_conv_stride.json"))
  args = p.parse_args(argv)
  from metajax.experiment import machine
  results = {"machine": machine.describe(), "method": __doc__.strip().splitlines()[0],
             "max_steps": args.max_steps, "runs": {}}
  for name in args.configs:
    ways, meta_batch, inner_lr = CONFIGS[name]
    entry = {"ways": ways, "meta_batch": meta_batch, "inner_steps": 1, "order": 2}
    for backbone in args.backbones:
      downsample, impl = BACKBONES[backbone]
      entry[backbone] = run_child(CHILD, json.dumps(
          [ways, meta_batch, inner_lr, downsample, impl, args.max_steps]))
      print(name, backbone, json.dumps(entry[backbone]), flush=True)
    ms = {b: entry[b]["median_ms"] for b in args.backbones}
    for other in ("stride_lax", "maxpool"):
      if "stride" in ms and other in ms:
        entry[f"speedup_stride_vs_{other}"] = ms[other] / ms["stride"]
    results["runs"][name] = entry
    pathlib.Path(args.out).write_text(json.dumps(results, indent=2))
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
