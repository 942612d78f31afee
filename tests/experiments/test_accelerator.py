"""The accelerator session script on the CPU with a tiny budget: cells in
priority order, a cell that cannot fit stopped at a checkpoint, the budget
kept, the summary JSON marked with the device, finished cells skipped."""
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from experiments import accelerator
from metajax.training import checkpoint

pytestmark = pytest.mark.data

ROOT = pathlib.Path(__file__).resolve().parents[2]
#: what the accelerator images may lack; none of it is needed to train.
OPTIONAL = ("PIL", "matplotlib", "tqdm", "tensorflow", "tensorflow_datasets",
            "tensorboardX", "torch", "scipy", "sklearn")
FITS = "tiny:steps_per_call=1"
NEVER_FITS = "tiny:iterations=100000,steps_per_call=1"


def test_policy_stops_a_cell_that_cannot_fit_then_at_the_budget():
  policy = accelerator.CellPolicy(end=time.time() + 100, remaining_steps=1000,
                                  require_fit=True)
  assert policy.stop(10, 0.2, 10)  # 200 s projected, 100 s left
  assert policy.reason == accelerator.NO_FIT
  assert policy.projected_seconds == pytest.approx(200)
  policy = accelerator.CellPolicy(end=time.time() + 100, remaining_steps=1000,
                                  require_fit=False)
  assert not policy.stop(10, 0.2, 10)
  assert policy.stop(10, 0.2, 600) and policy.reason == accelerator.STOPPED


def test_expected_steps_count_early_stopping_and_retraining():
  _, plain = accelerator.parse_cell("tiny")
  assert accelerator.expected_steps(plain) == plain.iterations
  _, stopping = accelerator.parse_cell("paper_protonet_5w1s")
  assert accelerator.expected_steps(stopping) == 2 * 200 * 100
  with pytest.raises(accelerator.config_lib.ConfigError, match="iterations"):
    accelerator.parse_cell("tiny:iterations=-1")


def _args(tmp_path, data, cache, minutes, reserve, *cells_and_flags):
  return ["--minutes", str(minutes), "--reserve-seconds", str(reserve),
          "--out", str(tmp_path), "--data-dir", str(data), "--cache-dir",
          str(cache), "--cells", *cells_and_flags]


def test_tiny_session_keeps_its_budget_and_writes_the_summary(
    tmp_path, shared_data_dir, omniglot_cache_dir):
  args = lambda *a: _args(tmp_path, shared_data_dir, omniglot_cache_dir, *a)
  root = tmp_path / "cpu-cpu"
  # A cell that fits trains to the end and is tested, in a process where
  # only what accelerator images have can be imported.
  script = (f"import sys\nfor m in {OPTIONAL!r}: sys.modules[m] = None\n"
            "from experiments import accelerator\n"
            f"accelerator.main({args(5, 5, FITS, '--no-partial')!r})")
  t0 = time.time()
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True)
  one_cell = time.time() - t0
  assert out.returncode == 0, out.stderr[-3000:]
  assert "finished" in out.stdout
  summary = json.loads((root / accelerator.SUMMARY_NAME).read_text())
  assert summary["device"]["platform"] == "cpu"
  (done,) = summary["cells"]
  assert done["status"] == accelerator.FINISHED and done["steps"] == 4
  assert (root / done["cell"] / "results.json").exists()
  # A cell projected far past the budget is set aside for the cells after
  # it; then, given the leftover time, it trains and stops at a checkpoint
  # at the budget, which a later session resumes. The budget follows this
  # machine's speed: room for a first attempt and a rerun.
  minutes, reserve = max(0.5, 2 * one_cell / 60), 2
  t0 = time.time()
  summary = accelerator.main(args(minutes, reserve, NEVER_FITS))
  elapsed = time.time() - t0
  assert json.loads((root / accelerator.SUMMARY_NAME).read_text()) == summary
  (row,) = summary["cells"]
  assert row["status"] == accelerator.STOPPED
  assert row["projected_seconds"] > 60 * minutes
  assert 2 <= row["steps_done"] < 100000
  assert (root / row["cell"] / "checkpoints" / "maml" /
          checkpoint.CHECKPOINT_NAME).exists()
  assert not (root / row["cell"] / "results.json").exists()
  # Over by at most one checkpoint interval (the reserve is for testing).
  assert elapsed < 60 * minutes + 10
  # A finished cell is skipped; a folder holding another config fails its
  # cell, not the session.
  (root / "tiny_seed_5").mkdir()
  (root / "tiny_seed_5" / "config.json").write_text('{"seed": 4}')
  again = accelerator.main(args(0.2, 1, "tiny:seed=5", FITS))
  mismatch, row = again["cells"]
  assert mismatch["status"] == accelerator.FAILED
  assert "seed: 4 -> 5" in mismatch["error"]
  assert row["status"] == accelerator.EARLIER
  assert row["accuracy"] == done["accuracy"]
