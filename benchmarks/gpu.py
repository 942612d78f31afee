"""Every benchmark workload on one accelerator: metajax against the PyTorch reference on the same device.

    PYTHONPATH=. python benchmarks/gpu.py --out results_gpu.json            # the GPU session's command
    PYTHONPATH=. python benchmarks/gpu.py --minutes 1 --only sine_maml2 --accuracy-cell tiny  # CPU smoke run

One command, at most ``--minutes`` (default 9) of wall time, writing one JSON
file (rewritten after every stage, so a run cut short keeps what it did):

* **Peaks.** Dense 8192^3 matrix products on the device: float32 at JAX's
  default precision (TF32 on NVIDIA tensor cores) and at ``'highest'``,
  bfloat16; and PyTorch's float32 (TF32 off and on) and bfloat16.
* **Workloads**: those of ``../shared/bench/configs.json`` (the PyTorch
  harness's) and ``benchmarks/workloads.json`` (84x84x3 mini-ImageNet
  shapes), in :data:`ORDER`. For each, metajax's meta-step
  (``make_meta_step``, tasks vmapped) in float32 and with bfloat16 compute
  (``Conv4(dtype=bfloat16)``: float32 meta-parameters, fast weights and
  accumulation), then the harness's own PyTorch implementations
  (``torch_ref.py``: ``MamlTorchFunc`` with ``vmap`` and ``loop``,
  ``ProtoNet``'s autograd step; run, never copied) on the same device, in a
  worker process that imports it from ``--torch-ref``. Each side: the
  first step (compile), the median of timed steps (synchronised each step),
  device memory (JAX: XLA's buffer assignment of the compiled step, and the
  allocator's peak so far; PyTorch: ``max_memory_allocated`` for that
  workload), GFLOP/s with the harness's FLOP count (its ``loop``
  implementation under ``FlopCounterMode``, matmul and convolution only), and
  that as a fraction of the measured matmul peak of the same precision.
  With ``--conv-impl auto`` the two convolution implementations of
  :func:`metajax.models.ops.conv2d` (``'custom'``, written for XLA:CPU, and
  ``'lax'``, XLA's own gradients) are first timed on the first two conv
  workloads, and the faster one is used for all (recorded under
  ``conv_impl``); the default is ``'custom'``, which won on an H200.
* **bf16 accuracy effect**: one short Omniglot run (``--accuracy-cell``,
  default ``paper_maml_5w1s`` shortened to ``--accuracy-iterations``) in
  float32 and in bfloat16, each tested on the same tasks (needs the data:
  ``--data-dir`` or ``$METAJAX_DATA_DIR``).

A workload that fails (or PyTorch that is missing) is recorded with its error
and the run goes on; a workload that does not fit in the time left is
recorded as skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_TORCH_REF = ROOT.parent / "shared" / "bench" / "torch_ref.py"
OWN_WORKLOADS = ROOT / "benchmarks" / "workloads.json"
#: the workloads in the order they run (most asked-about first).
ORDER = ("omni5w1s_maml2", "mini5w1s_maml2", "mini5w5s_maml2", "mini5w5s_proto",
         "omni5w5s_proto", "omni60w5s_proto", "omni20w1s_maml2", "omni5w1s_maml1",
         "mini5w1s_maml1", "omni20w1s_maml1", "sine_maml2", "sine_maml1")
#: metajax variants: name -> computation dtype of the model.
VARIANTS = {"f32": "float32", "bf16": "bfloat16"}

# ---------------------------------------------------------------------------
# the PyTorch worker: a process that imports the harness once and answers one
# JSON request per line (the same device, one CUDA context for all workloads)
# ---------------------------------------------------------------------------
TORCH_WORKER = r'''
import importlib.util, json, statistics, sys, time, traceback
ref_path = sys.argv[1]
sys.argv = [sys.argv[0]]           # the harness parses flags from argv at import
spec = importlib.util.spec_from_file_location("torch_ref", ref_path)
ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)
import torch
dev = "cuda" if torch.cuda.is_available() else "cpu"
def sync():
  if dev == "cuda": torch.cuda.synchronize()
def peak(n=8192, dtype=torch.float32, tf32=False, reps=10):
  torch.backends.cuda.matmul.allow_tf32 = tf32
  a = torch.randn(n, n, device=dev, dtype=dtype); b = torch.randn(n, n, device=dev, dtype=dtype)
  for _ in range(3): a @ b
  sync(); t0 = time.perf_counter()
  for _ in range(reps): a @ b
  sync(); torch.backends.cuda.matmul.allow_tf32 = False
  return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9
def to_dev(batch):
  return tuple(t.to(dev) for t in batch)
def run(cfg, impls, budget_s, max_steps, peak_n):
  out = {"device": dev, "torch": torch.__version__,
         "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
         "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
  torch.manual_seed(0)
  batches = [to_dev(b) for b in ref.make_batches(cfg, 2, seed=0)]
  with torch.device(dev):
    canon = ref.MamlTorchFunc(cfg, "loop") if cfg["algorithm"] == "maml" else ref.ProtoNet(cfg)
    flops, _ = ref.count_flops(canon.step, batches[0])
  out["gflop_per_step"] = flops / 1e9
  del canon
  for impl in impls:
    try:
      if dev == "cuda":
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
      with torch.device(dev):
        runner = ref.make_runner(cfg, impl)
      def step(batch):
        loss = runner.step(batch); sync(); return loss
      warm, times, loss = ref.time_steps(step, batches, 1, max_steps, 3, budget_s)
      first = warm[0]
      ms = sorted(t * 1e3 for t in times)
      out[impl] = {"first_step_s": first, "median_ms": statistics.median(ms),
                   "p25_ms": ms[len(ms) // 4], "p75_ms": ms[(3 * len(ms)) // 4],
                   "steps_timed": len(ms), "last_loss": loss,
                   "peak_memory_mib": (torch.cuda.max_memory_allocated() / 2 ** 20
                                       if dev == "cuda" else None)}
      del runner
    except Exception as e:
      out[impl] = {"error": f"{type(e).__name__}: {e}"[:2000]}
  return out
print(json.dumps({"ready": True, "torch": torch.__version__, "device": dev,
                  "device_name": torch.cuda.get_device_name() if dev == "cuda" else "cpu"}),
      flush=True)
for line in sys.stdin:
  req = json.loads(line)
  try:
    if req["op"] == "peak":
      n = req["n"]
      res = {"float32_gflops": peak(n), "tf32_gflops": peak(n, tf32=True),
             "bfloat16_gflops": peak(n, torch.bfloat16), "n": n}
    else:
      res = run(req["cfg"], req["impls"], req["budget_s"], req["max_steps"], req.get("n"))
  except Exception:
    res = {"error": traceback.format_exc()[-2000:]}
  print(json.dumps(res), flush=True)
'''


class TorchWorker:
  """The PyTorch harness in a child process (``None`` answers if it cannot
  start, e.g. no torch): requests in, one JSON answer per request."""

  def __init__(self, torch_ref: pathlib.Path, python: str):
    self.error, self.info = None, {}
    if not torch_ref.exists():
      self.proc, self.error = None, f"no PyTorch harness at {torch_ref}"
      return
    self.proc = subprocess.Popen([python, "-c", TORCH_WORKER, str(torch_ref)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=ROOT)
    line = self.proc.stdout.readline()
    if not line:
      self.error = "PyTorch worker did not start: " + self.proc.stderr.read()[-1500:]
      self.proc = None
    else:
      self.info = json.loads(line)

  def ask(self, **request) -> dict:
    if self.proc is None:
      return {"error": self.error}
    self.proc.stdin.write(json.dumps(request) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      self.error = "PyTorch worker died: " + self.proc.stderr.read()[-1500:]
      self.proc = None
      return {"error": self.error}
    return json.loads(line)

  def close(self):
    if self.proc is not None:
      self.proc.stdin.close()
      self.proc.wait(timeout=60)


# ---------------------------------------------------------------------------
# the metajax side (this process)
# ---------------------------------------------------------------------------
def load_workloads(torch_ref: pathlib.Path) -> dict:
  """name -> workload config (the harness's defaults merged in, as its own
  ``load_configs`` does) plus ``'matrix'``: name -> PyTorch impls."""
  configs, matrix = {}, {}
  for path in (torch_ref.parent / "configs.json", OWN_WORKLOADS):
    if not path.exists():
      continue
    raw = json.loads(path.read_text())
    for name, cfg in raw["configs"].items():
      configs[name] = {**json.loads(json.dumps(raw["defaults"])), **cfg, "name": name}
    matrix.update({k: v for k, v in raw["matrix"].items() if not k.startswith("_")})
  return {"configs": configs, "matrix": matrix}


def workload_tasks(cfg):
  """Random tasks of workload ``cfg`` (NHWC images, class-major labels)."""
  import jax
  import jax.numpy as jnp

  import metajax as mj
  from metajax.data import sinusoid
  key = jax.random.PRNGKey(0)
  if cfg["task"] == "sinusoid":
    return sinusoid.sample_tasks(key, cfg["meta_batch"], cfg["support"], cfg["query"])
  c, h, w = cfg["model"]["in_shape"]
  n, k, q = cfg["ways"], cfg["shots"], cfg["query_per_class"]
  t = cfg.get("meta_batch", 1)   # ProtoNets: one episode a step
  k1, k2 = jax.random.split(key)
  lab = lambda m: jnp.tile(jnp.repeat(jnp.arange(n, dtype=jnp.int32), m), (t, 1))  # noqa: E731
  return mj.Task(jax.random.normal(k1, (t, n * k, h, w, c)), lab(k),
                 jax.random.normal(k2, (t, n * q, h, w, c)), lab(q))


def workload_learner(cfg, dtype=None):
  """metajax's learner for workload ``cfg``, computing in ``dtype``."""
  import metajax as mj
  from metajax.models import MLP, Conv4
  if cfg["task"] == "sinusoid":
    return mj.MAML(MLP(tuple(cfg["model"]["sizes"][1:-1]), 1, dtype=dtype), loss="mse",
                   inner_steps=cfg["inner_steps"], inner_lr=cfg["inner_lr"],
                   first_order=cfg["order"] == 1)
  if cfg["algorithm"] == "protonet":
    return mj.ProtoNet(Conv4(None, filters=cfg["model"]["hidden"], dtype=dtype),
                       embedding="joint", ways=cfg["ways"])
  return mj.MAML(Conv4(cfg["ways"], filters=cfg["model"]["hidden"], dtype=dtype),
                 loss="cross_entropy", inner_steps=cfg["inner_steps"],
                 inner_lr=cfg["inner_lr"], first_order=cfg["order"] == 1)


def time_jax(cfg, dtype_name: str, conv_impl: str, budget_s: float, max_steps: int) -> dict:
  """One metajax variant of workload ``cfg``: compile, timing, memory."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  import metajax as mj
  from metajax.models import ops
  ops.IMPL = conv_impl
  dtype = None if dtype_name == "float32" else getattr(jnp, dtype_name)
  tasks = workload_tasks(cfg)
  learner = workload_learner(cfg, dtype)
  opt = optax.adam(cfg["outer_opt"]["lr"])
  state = mj.init_state(learner, opt, jax.random.PRNGKey(1), mj.task_slice(tasks, 0))
  step = mj.make_meta_step(learner, opt, task_map="vmap", check=False)
  t0 = time.perf_counter()
  compiled = step.jitted.lower(state, tasks).compile()
  compile_s = time.perf_counter() - t0
  memory = {}
  analysis = compiled.memory_analysis()
  if analysis is not None:
    for field in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
                  "alias_size_in_bytes", "generated_code_size_in_bytes"):
      if hasattr(analysis, field):
        memory[field.replace("_size_in_bytes", "_mib")] = getattr(analysis, field) / 2 ** 20
  t0 = time.perf_counter()
  state, m = step(state, tasks)
  jax.block_until_ready(m)
  first = time.perf_counter() - t0
  times, start = [], time.perf_counter()
  while len(times) < max_steps and (len(times) < 3 or time.perf_counter() - start < budget_s):
    t0 = time.perf_counter()
    state, m = step(state, tasks)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  ms = np.array(times) * 1e3
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    memory["allocator_peak_so_far_mib"] = stats["peak_bytes_in_use"] / 2 ** 20
  ops.IMPL = "custom"
  return {"dtype": dtype_name, "conv_impl": conv_impl, "compile_s": compile_s,
          "first_step_s": first, "median_ms": float(np.median(ms)),
          "p25_ms": float(np.percentile(ms, 25)), "p75_ms": float(np.percentile(ms, 75)),
          "steps_timed": len(ms), "last_loss": float(m["loss"]), "memory": memory}


def jax_peaks(n: int) -> dict:
  """Dense ``n^3`` matrix-product rates (GFLOP/s) on JAX's default device."""
  import jax
  import jax.numpy as jnp
  out = {"n": n}
  for name, dtype, precision in (("float32_default", jnp.float32, None),
                                 ("float32_highest", jnp.float32, "highest"),
                                 ("bfloat16", jnp.bfloat16, None)):
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
    f = jax.jit(lambda a, b, p=precision: jnp.dot(a, b, precision=p))
    f(a, b).block_until_ready()
    reps = 10
    t0 = time.perf_counter()
    for _ in range(reps):
      c = f(a, b)
    c.block_until_ready()
    out[name + "_gflops"] = 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9
  return out


def accuracy_effect(cell: str, iterations: int | None, data_dir, workroot: pathlib.Path,
                    deadline: float) -> dict:
  """Test accuracy of ``cell`` trained in float32 and in bfloat16 compute
  (a run still training at ``deadline`` stops and is recorded as such)."""
  from experiments.omniglot import configs, train
  from metajax.experiment import config as config_lib
  from metajax.experiment import workdir as workdir_lib
  from metajax.training import DeadlineReached
  out = {"cell": cell, "iterations": iterations}
  for dtype in VARIANTS.values():
    cfg = config_lib.load_variant(configs, cell)
    sets = [f"compute_dtype={dtype}"] + ([f"iterations={iterations}"] if iterations else [])
    cfg = config_lib.override(cfg, sets)
    config_lib.validate(cfg)
    workdir = workroot / f"{cell}_{dtype}"
    workdir_lib.prepare(workdir, config_lib.to_dict(cfg), fresh=True)
    t0 = time.time()
    try:
      r = train.train_and_evaluate(cfg, workdir, data_dir=data_dir, progress=False,
                                   deadline=deadline)
      out[dtype] = {"test_accuracy": r["test"]["mean"], "ci95": r["test"]["ci95"],
                    "test_tasks": r["test"]["num_tasks"], "seconds": time.time() - t0,
                    "budget": r.get("budget"), "final_train_loss": _last_train_loss(workdir)}
    except DeadlineReached:
      out[dtype] = {"stopped": "time budget", "seconds": time.time() - t0,
                    "final_train_loss": _last_train_loss(workdir)}
    except Exception as e:
      out[dtype] = {"error": f"{type(e).__name__}: {e}"[:2000],
                    "traceback": traceback.format_exc()[-1500:]}
  return out


def check_accuracy_data(cell: str, data_dir) -> None:
  """Loads the data of the accuracy run's config ``cell`` (an unknown config
  or missing files raise here, before any benchmark runs)."""
  from experiments.omniglot import configs, train
  from metajax.experiment import config as config_lib
  cfg = config_lib.load_variant(configs, cell)
  config_lib.validate(cfg)
  train.load_split(cfg, data_dir)


def _last_train_loss(workdir):
  from metajax.experiment import metrics_log
  losses = [r["loss"] for r in metrics_log.read_metrics(workdir)
            if r.get("split", "").endswith("train") and "loss" in r]
  return statistics.mean(losses[-50:]) if losses else None


def describe_device() -> dict:
  import jax
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind, "count": jax.device_count(),
          "jax": jax.__version__, "python": platform.python_version(),
          "preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "default")}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", default="results_gpu.json")
  p.add_argument("--minutes", type=float, default=9.0, help="wall-time budget of the whole run")
  p.add_argument("--only", nargs="+", help="workload names (default: all, in ORDER)")
  p.add_argument("--torch-ref", type=pathlib.Path, default=DEFAULT_TORCH_REF)
  p.add_argument("--torch-python", default=sys.executable)
  p.add_argument("--no-torch", action="store_true")
  p.add_argument("--step-budget-s", type=float, default=2.0, help="timed seconds per variant")
  p.add_argument("--max-steps", type=int, default=50)
  p.add_argument("--peak-n", type=int, default=8192)
  p.add_argument("--conv-impl", choices=("auto", "custom", "lax"), default="custom",
                 help="metajax's convolution rules; 'auto' first times both on two "
                      "workloads (on an H200 'custom' won, 45.1 vs 49.9 ms)")
  p.add_argument("--accuracy-cell", default="paper_maml_5w1s",
                 help="Omniglot config for the bf16 accuracy run ('none' skips it)")
  p.add_argument("--accuracy-iterations", type=int, default=1000)
  p.add_argument("--accuracy-minutes", type=float, default=2.5,
                 help="time kept for the accuracy run")
  p.add_argument("--data-dir", default=None)
  args = p.parse_args(argv)
  # Before anything starts a JAX backend: PyTorch shares the device.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  end = time.time() + 60 * args.minutes
  accuracy_reserve = 0 if args.accuracy_cell == "none" else 60 * args.accuracy_minutes
  specs = load_workloads(args.torch_ref)
  names = args.only or [n for n in ORDER if n in specs["configs"]]
  unknown = [n for n in names if n not in specs["configs"]]
  if unknown:
    p.error(f"unknown workloads {unknown}; known: {sorted(specs['configs'])}")
  if args.accuracy_cell != "none":
    try:
      check_accuracy_data(args.accuracy_cell, args.data_dir)
    except (FileNotFoundError, ValueError, KeyError) as e:
      p.error(f"the bf16 accuracy run ({args.accuracy_cell}) cannot start: {e}\n"
              "(give --data-dir / $METAJAX_DATA_DIR, or --accuracy-cell none)")
  out_path = pathlib.Path(args.out)
  results = {"method": __doc__.strip().splitlines()[0], "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
             "args": {k: str(v) for k, v in vars(args).items()}, "device": describe_device(),
             "runs": {}}

  def save():
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, out_path)

  worker = None if args.no_torch else TorchWorker(args.torch_ref, args.torch_python)
  results["torch_worker"] = ({"disabled": True} if worker is None else
                             worker.info or {"error": worker.error})
  results["peaks"] = {"jax": jax_peaks(args.peak_n)}
  if worker is not None:
    results["peaks"]["torch"] = worker.ask(op="peak", n=args.peak_n)
  save()
  print(json.dumps(results["peaks"]), flush=True)

  conv_impl = "custom" if args.conv_impl == "auto" else args.conv_impl
  probes = [] if args.conv_impl != "auto" else [n for n in names if "sine" not in n][:2]
  probe_times = {"custom": 0.0, "lax": 0.0}
  for name in names:
    remaining = end - time.time() - accuracy_reserve
    if remaining < 20:
      results["runs"][name] = {"skipped": "time budget"}
      save()
      continue
    cfg = specs["configs"][name]
    entry = {"config": cfg, "jax": {}}
    impls = ("custom", "lax") if name in probes else (conv_impl,)
    for impl in impls:
      for variant, dtype in VARIANTS.items():
        key = f"{variant}_{impl}"
        try:
          entry["jax"][key] = time_jax(cfg, dtype, impl, args.step_budget_s, args.max_steps)
        except Exception as e:
          entry["jax"][key] = {"error": f"{type(e).__name__}: {e}"[:2000],
                               "traceback": traceback.format_exc()[-1500:]}
        if name in probes and variant == "f32" and "median_ms" in entry["jax"][key]:
          probe_times[impl] += entry["jax"][key]["median_ms"]
    if name in probes and name == probes[-1] and all(probe_times.values()):
      conv_impl = min(probe_times, key=probe_times.get)
      results["conv_impl"] = {"chosen": conv_impl, "probe_ms": probe_times, "probes": probes}
    if worker is not None:
      impls_t = specs["matrix"].get(name, ["autograd"] if cfg["algorithm"] == "protonet" else ["loop"])
      entry["torch"] = worker.ask(op="run", cfg=cfg, impls=impls_t, budget_s=args.step_budget_s,
                                  max_steps=args.max_steps)
    summarise(entry, results["peaks"])
    results["runs"][name] = entry
    save()
    print(name, json.dumps(entry.get("summary", {})), flush=True)
  if worker is not None:
    worker.close()
  results.setdefault("conv_impl", {"chosen": conv_impl})

  if args.accuracy_cell != "none":
    if end - time.time() > 30:
      with tempfile.TemporaryDirectory() as d:
        results["bf16_accuracy"] = accuracy_effect(args.accuracy_cell, args.accuracy_iterations,
                                                   args.data_dir, pathlib.Path(d), end)
    else:
      results["bf16_accuracy"] = {"skipped": "time budget"}
  results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
  save()
  print(format_table(results), flush=True)
  return results


def summarise(entry: dict, peaks: dict) -> None:
  """Adds GFLOP/s, fractions of the matching matmul peak and the best
  same-run torch/jax ratio to ``entry['summary']``."""
  torch_res = entry.get("torch", {})
  gflop = torch_res.get("gflop_per_step")
  best_torch = min((v["median_ms"] for v in torch_res.values()
                    if isinstance(v, dict) and "median_ms" in v), default=None)
  jp = peaks.get("jax", {})
  summary = {"gflop_per_step": gflop, "torch_best_ms": best_torch}
  for key, r in entry["jax"].items():
    if "median_ms" not in r:
      continue
    s = {"median_ms": r["median_ms"], "compile_s": r["compile_s"],
         "temp_mib": r["memory"].get("temp_mib")}
    if gflop:
      s["gflops"] = gflop / (r["median_ms"] / 1e3)
      peak = jp.get("bfloat16_gflops" if r["dtype"] == "bfloat16" else "float32_default_gflops")
      if peak:
        s["fraction_of_matmul_peak"] = s["gflops"] / peak
    if best_torch:
      s["speedup_vs_best_torch"] = best_torch / r["median_ms"]
    summary[key] = s
  entry["summary"] = summary


def format_table(results: dict) -> str:
  lines = ["| workload | variant | ms/step | compile s | XLA temp MiB | GFLOP/s | frac. peak | torch best ms | torch/jax |",
           "|---|---|---|---|---|---|---|---|---|"]
  fmt = lambda v, f="{:.3g}": "-" if v is None else f.format(v)  # noqa: E731
  for name, entry in results["runs"].items():
    summary = entry.get("summary")
    if not summary:
      lines.append(f"| {name} | {entry.get('skipped') or 'failed'} | | | | | | | |")
      continue
    for key, s in summary.items():
      if not isinstance(s, dict):
        continue
      lines.append(f"| {name} | {key} | {fmt(s['median_ms'])} | {fmt(s['compile_s'])} | "
                   f"{fmt(s.get('temp_mib'))} | {fmt(s.get('gflops'))} | "
                   f"{fmt(s.get('fraction_of_matmul_peak'), '{:.2f}')} | "
                   f"{fmt(summary.get('torch_best_ms'))} | {fmt(s.get('speedup_vs_best_torch'), '{:.2f}')} |")
  acc = results.get("bf16_accuracy", {})
  for dtype in VARIANTS.values():
    if isinstance(acc.get(dtype), dict) and "test_accuracy" in acc[dtype]:
      a = acc[dtype]
      lines.append(f"accuracy {acc['cell']} x{acc['iterations']} {dtype}: "
                   f"{100 * a['test_accuracy']:.2f} +- {100 * a['ci95']:.2f} ({a['seconds']:.0f} s)")
  return "\n".join(lines)


if __name__ == "__main__":
  main()
