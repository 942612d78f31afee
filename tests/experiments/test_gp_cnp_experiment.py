"""The CNP entry point runs a tiny configuration and writes results and figures."""
import json

import numpy as np

from experiments.gp_cnp import main


def test_tiny_run(tmp_path):
  r = main.main(["--tiny", "--out", str(tmp_path), "--no-progress"])
  saved = json.loads((tmp_path / "results.json").read_text())
  ll = saved["test"]["log_likelihood_per_target"]
  assert np.isfinite(ll["mean"]) and ll["ci95"] > 0
  assert saved["test"]["num_tasks"] == 8
  assert (tmp_path / saved["figures"][0]).stat().st_size > 5_000
  assert r["train"]["loss_curve"][-1][0] == 6
