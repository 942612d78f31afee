"""Conv-4 building blocks on CPU: convolutions and the query-set gradient, with and
without metajax's XLA:CPU flag.

    python benchmarks/conv_ops.py [--repeats 60] [--out benchmarks/results_conv_ops.json]

Each setting (``metajax.xla_cpu`` on, and off with ``METAJAX_XLA_CPU_DEFAULTS=0``)
runs in a fresh process, since XLA reads its flags once. Timed (median ms of
``--repeats`` jitted calls, float32, 64 filters):

* the three stride-1 3x3 convolution maps of :mod:`metajax.models.ops`
  (forward, input gradient, kernel gradient), and ``lax.conv_general_dilated``
  for comparison, at the conv-4 shapes of a 5-way 15-query set:
  75 x 28 x 28 x 1, 75 x 14 x 14 x 64 and 75 x 7 x 7 x 64;
* the forward pass, and the gradient of the cross-entropy with respect to
  all parameters, of a conv-4 on 75 images, once with :class:`metajax.models.Conv4` (batch norm and
  ReLU after the pool, :class:`~metajax.models.NormReluMaxPool`) and once with
  the textbook block order (conv + bias, :class:`~metajax.models.TransductiveBatchNorm`,
  ReLU, :func:`~metajax.models.ops.max_pool`) on the same ``ops`` convolutions.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from maml_vs_torch import run_child  # noqa: E402

CHILD = r'''
import json, sys, time
import metajax as mj
import flax.linen as nn
import jax, jax.numpy as jnp, numpy as np
from jax import lax
from metajax.models import Conv, Conv4, TransductiveBatchNorm, ops

repeats = int(sys.argv[1])


def bench(f, *args):
  jax.block_until_ready(f(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter(); jax.block_until_ready(f(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times) * 1e3)


class TextbookConv4(nn.Module):
  @nn.compact
  def __call__(self, x):
    for i in range(4):
      x = Conv(64, 3, name=f"conv{i}")(x)
      x = ops.max_pool(nn.relu(TransductiveBatchNorm(name=f"norm{i}")(x)), 2)
    return nn.Dense(5, name="head")(x.reshape(x.shape[0], -1))


key = jax.random.PRNGKey(0)
pads = ((1, 1), (1, 1))
out = {"xla_cpu": mj.xla_cpu.STATUS, "convs": {}}
for n, h, cin in [(75, 28, 1), (75, 14, 64), (75, 7, 64)]:
  x = jax.random.normal(key, (n, h, h, cin))
  w = jax.random.normal(key, (3, 3, cin, 64)) * 0.1
  dy = jax.random.normal(jax.random.PRNGKey(1), (n, h, h, 64))
  gflop = 2 * n * h * h * 9 * cin * 64 / 1e9
  row = {
      "forward": bench(jax.jit(lambda x, w: ops._forward(x, w, pads)), x, w),
      "forward_lax": bench(jax.jit(lambda x, w: lax.conv_general_dilated(
          x, w, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))), x, w),
      "kernel_grad": bench(jax.jit(lambda x, dy: ops._kernel_grad(x, dy, pads, (3, 3))), x, dy),
  }
  if cin > 1:  # a network never needs the input gradient of its first layer
    row["input_grad"] = bench(jax.jit(lambda dy, w: ops._input_grad(dy, w, pads)), dy, w)
  row["gflop_each"] = gflop
  out["convs"][f"{n}x{h}x{h}x{cin}"] = row

x = jax.random.normal(key, (75, 28, 28, 1))
y = jnp.repeat(jnp.arange(5), 15)
for name, model in [("conv4", Conv4(5)), ("textbook_order", TextbookConv4())]:
  params = model.init(jax.random.PRNGKey(2), x)
  loss = lambda p: -jnp.mean(jax.nn.log_softmax(model.apply(p, x))[jnp.arange(75), y])
  out[f"query_grad_{name}"] = bench(jax.jit(jax.grad(loss)), params)
  out[f"query_forward_{name}"] = bench(jax.jit(model.apply), params, x)
print(json.dumps(out))
'''


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--repeats", type=int, default=60)
  p.add_argument("--out", default=str(ROOT / "benchmarks" / "results_conv_ops.json"))
  args = p.parse_args(argv)
  from metajax.experiment import machine
  results = {"machine": machine.describe(), "method": __doc__.strip().splitlines()[0],
             "repeats": args.repeats,
             "with_xla_defaults": run_child(CHILD, str(args.repeats)),
             "without_xla_defaults": run_child(CHILD, str(args.repeats), xla_defaults=False)}
  pathlib.Path(args.out).write_text(json.dumps(results, indent=2))
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
