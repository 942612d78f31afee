"""Full-budget Omniglot paper cells on an accelerator, within a time budget.

    PYTHONPATH=. python -m experiments.accelerator --minutes 12           # the GPU session's script
    python -m experiments.accelerator --minutes 1 --cells tiny tiny:iterations=100000 --out /tmp/a

Runs the cells of :data:`PRIORITY` (or ``--cells``; each ``CONFIG`` or
``CONFIG:key=value,...`` of ``experiments.omniglot``'s variants) in order,
each in its run folder ``<out>/<device>/<cell>``, and stops cleanly at the
budget:

1. **Cells that fit.** A cell trains until its first checkpoint; from that
   interval's time per step it is projected to the end of its budget
   (:func:`expected_steps`). A cell whose projection ends after the budget
   (less ``--reserve-seconds`` for testing) stops there, checkpointed, and
   the next cell is tried; one that fits trains to the end and is tested.
2. **Leftover time** goes to the first unfinished cell (``--no-partial``:
   none), which trains until the budget and stops at a checkpoint. A cell
   set aside in step 1 is taken up only if the time left exceeds its first
   attempt's (a rerun compiles and trains one interval before it can stop).

A cell's first checkpoint interval always runs, so the budget can be
overrun by one compile and interval; ``--reserve-seconds`` (kept for
testing the last cell) absorbs it.

Nothing is lost when a cell stops: its checkpoints stay in its run folder and
the next invocation on the same device resumes it exactly (runs only ever
stop at a checkpoint; :class:`metajax.training.DeadlineReached`). Cells
already tested are skipped.

Writes ``<out>/<device>/summary.json`` after every cell (atomically): the
device (platform, kind, count, jax version), the budget, and per cell its
status (``finished``, ``finished earlier``, ``does not fit``, ``stopped at
budget``, ``failed``, ``not started``), steps, seconds, projection, and for
finished cells the test accuracy with its 95% interval, the budget label and
the published number. Each finished cell's own ``results.json`` holds the
full record (machine included). ``<device>`` is e.g. ``gpu-nvidia-h100``.

The parent process trains every cell itself (one process, so the
accelerator's memory is claimed once), so start it on an otherwise idle
machine. It needs the Omniglot data (``--data-dir`` or
``$METAJAX_DATA_DIR``) and nothing beyond jax, flax, optax and numpy.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import re
import sys
import time
import traceback

from metajax.experiment import config as config_lib
from metajax.experiment import metrics_log
from metajax.experiment import workdir as workdir_lib

#: the paper cells in the order an accelerator session runs them: the
#: headline cells first (MAML and ProtoNets 5-way 1-shot), then the 20-way
#: ones, then the methods whose CPU runs are shortest of their budget.
PRIORITY = (
    "paper_maml_5w1s", "paper_protonet_5w1s", "paper_protonet_20w1s",
    "paper_maml_20w1s", "paper_reptile_5w1s", "paper_imaml_5w1s",
    "paper_protonet_5w5s", "paper_mamlpp_5w1s", "paper_fomaml_5w1s",
    "paper_metasgd_5w1s", "paper_maml_5w5s", "paper_protonet_20w5s",
)
SUMMARY_NAME = "summary.json"
FINISHED, EARLIER = "finished", "finished earlier"
NO_FIT, STOPPED = "does not fit", "stopped at budget"
FAILED, NOT_STARTED = "failed", "not started"


def parse_cell(spec: str):
  """``'CONFIG[:key=value,...]'`` -> ``(name, validated Config)``; the name
  is the spec with ``:``/``,``/``=`` made folder-safe."""
  from experiments.omniglot import configs
  head, _, sets = spec.partition(":")
  cfg = config_lib.load_variant(configs, head)
  cfg = config_lib.override(cfg, [s for s in sets.split(",") if s])
  config_lib.validate(cfg)
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec).strip("_"), cfg


def expected_steps(cfg) -> int:
  """A cell's meta-steps to the end of its budget: ``iterations``; with
  early stopping, the shortest run it allows (``patience`` rounds of
  ``val_every`` steps), twice with ``retrain_trainval`` (a lower bound: the
  run goes on while validation improves)."""
  if cfg.val_every is None:
    return cfg.iterations
  steps = min(cfg.iterations, cfg.patience * cfg.val_every)
  return 2 * steps if cfg.retrain_trainval else steps


def steps_done(workdir) -> int:
  """Training steps already logged in ``workdir`` (all phases)."""
  rows = metrics_log.read_metrics(workdir)
  return sum(1 for r in rows if str(r.get("split", "")).endswith("/train"))


@dataclasses.dataclass
class CellPolicy:
  """A :func:`metajax.fit` deadline policy for one cell: stop when the next
  checkpoint interval would end after ``end``; with ``require_fit``, also
  at the first checkpoint when the cell's projected remaining time does
  not fit before ``end`` (see :func:`expected_steps`)."""
  end: float
  remaining_steps: int
  require_fit: bool
  projected_seconds: float | None = None
  reason: str | None = None
  _checked: bool = False

  def stop(self, step: int, seconds_per_step: float, steps_ahead: int) -> bool:
    now = time.time()
    if self.require_fit and not self._checked:
      self._checked = True
      self.projected_seconds = seconds_per_step * self.remaining_steps
      if now + self.projected_seconds > self.end:
        self.reason = NO_FIT
        return True
    if now + seconds_per_step * steps_ahead > self.end:
      self.reason = STOPPED
      return True
    return False


def describe_device() -> dict:
  import jax
  d = jax.devices()[0]
  return {"platform": d.platform, "device_kind": d.device_kind,
          "device_count": jax.device_count(), "jax": jax.__version__}


def device_slug(device: dict) -> str:
  kind = re.sub(r"[^a-z0-9]+", "-", device["device_kind"].lower()).strip("-")
  return f"{device['platform']}-{kind}"


def _finished(workdir: pathlib.Path, cfg) -> dict | None:
  """The cell's results when it was already tested with this config."""
  path = workdir / workdir_lib.RESULTS_NAME
  if not path.exists():
    return None
  results = json.loads(path.read_text())
  same = not config_lib.diff(results.get("config", {}),
                             workdir_lib.jsonable(config_lib.to_dict(cfg)))
  return results if same else None


def _report(results: dict) -> dict:
  test, published = results["test"], results.get("published") or {}
  return {"accuracy": test["mean"], "ci95": test["ci95"],
          "budget": results.get("budget"),
          "steps": results.get("train", {}).get("iterations"),
          "published": published.get("value"),
          "batch_norm": results.get("protocol", {}).get("batch_norm_policy")}


def run(cells, *, minutes: float, out, data_dir=None, cache_dir=None,
        reserve_seconds: float = 60.0, partial: bool = True) -> dict:
  """Runs ``cells`` (specs, see :func:`parse_cell`) within ``minutes``.

  Returns the summary also written to ``<out>/<device>/summary.json``.
  Raises ``ConfigError`` for a bad cell spec before any training.
  """
  from experiments.omniglot import train
  from metajax.training import DeadlineReached
  start = time.time()
  end = start + 60.0 * minutes - reserve_seconds
  parsed = [parse_cell(spec) for spec in cells]  # bad specs fail first
  device = describe_device()
  root = pathlib.Path(out) / device_slug(device)
  root.mkdir(parents=True, exist_ok=True)
  summary = {"device": device, "budget_minutes": minutes,
             "reserve_seconds": reserve_seconds,
             "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "cells": [{"cell": n, "config": spec, "status": NOT_STARTED}
                       for spec, (n, _) in zip(cells, parsed)]}

  def save():
    summary["elapsed_seconds"] = round(time.time() - start, 1)
    workdir_lib.write_json_atomic(root / SUMMARY_NAME, summary)

  def attempt(row, cfg, require_fit):
    workdir = root / row["cell"]
    policy = CellPolicy(end, expected_steps(cfg), require_fit)
    t0 = time.time()
    try:
      earlier = _finished(workdir, cfg)
      if earlier is not None:
        row.update(status=EARLIER, **_report(earlier))
        return
      # A folder of another config is a failed cell, not a failed session.
      workdir_lib.prepare(workdir, config_lib.to_dict(cfg),
                          defaults=config_lib.to_dict(type(cfg)()))
      policy.remaining_steps = max(0, expected_steps(cfg) - steps_done(workdir))
      results = train.train_and_evaluate(
          cfg, workdir, data_dir=data_dir, cache_dir=cache_dir,
          progress=False, deadline=policy)
      row.update(status=FINISHED, **_report(results))
    except DeadlineReached as e:
      row.update(status=policy.reason, seconds_per_step=e.seconds_per_step)
    except Exception as e:  # one broken cell must not end the session
      row.update(status=FAILED, error=f"{type(e).__name__}: {e}",
                 traceback=traceback.format_exc()[-2000:])
    row["seconds"] = round(row.get("seconds", 0) + time.time() - t0, 1)
    row["steps_done"] = steps_done(workdir)
    row["expected_steps"] = expected_steps(cfg)
    if policy.projected_seconds is not None:
      row["projected_seconds"] = round(policy.projected_seconds, 1)
    save()

  save()
  for row, (_, cfg) in zip(summary["cells"], parsed):
    if time.time() >= end:
      break
    attempt(row, cfg, require_fit=True)
  if partial:
    for row, (_, cfg) in zip(summary["cells"], parsed):
      if time.time() >= end:
        break
      # A set-aside cell's rerun compiles and trains one interval before it
      # can stop, as its first attempt did: start it only if that fits.
      if (row["status"] == NOT_STARTED or row["status"] == NO_FIT
          and time.time() + row["seconds"] < end):
        attempt(row, cfg, require_fit=False)
  summary["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
  save()
  return summary


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(
      prog="python -m experiments.accelerator",
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split("\n\n", 2)[2])
  parser.add_argument("--minutes", type=float, required=True,
                      help="wall-clock budget for the whole session")
  parser.add_argument("--cells", nargs="+", default=list(PRIORITY),
                      metavar="CELL", help="CONFIG or CONFIG:key=value,... in "
                      "priority order (default: the paper cells of PRIORITY)")
  parser.add_argument("--out", default="results/accelerator",
                      help="root of the run folders (default: %(default)s)")
  parser.add_argument("--data-dir", default=None)
  parser.add_argument("--cache-dir", default=None)
  parser.add_argument("--reserve-seconds", type=float, default=60.0,
                      help="kept free at the end for testing the last cell")
  parser.add_argument("--no-partial", dest="partial", action="store_false",
                      help="do not spend leftover time on an unfinished cell")
  args = parser.parse_args(argv)
  if args.minutes <= 0 or args.reserve_seconds < 0:
    parser.error("--minutes must be positive and --reserve-seconds >= 0")
  if args.reserve_seconds >= 60 * args.minutes:
    parser.error(f"--reserve-seconds ({args.reserve_seconds}) leaves no time "
                 f"of the {args.minutes}-minute budget")
  try:
    summary = run(args.cells, minutes=args.minutes, out=args.out,
                  data_dir=args.data_dir, cache_dir=args.cache_dir,
                  reserve_seconds=args.reserve_seconds, partial=args.partial)
  except config_lib.ConfigError as e:
    parser.error(str(e))
  for row in summary["cells"]:
    acc = (f" {100 * row['accuracy']:.2f} +- {100 * row['ci95']:.2f}"
           if "accuracy" in row else "")
    print(f"{row['cell']}: {row['status']}{acc}")
  return summary


if __name__ == "__main__":
  main(sys.argv[1:])
