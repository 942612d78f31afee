"""The sinusoid entry point runs a tiny configuration and writes its results.

It exercises ``experiments/`` (training, evaluation, the figure), not
:mod:`metajax.data`, so it lives here rather than next to the task sampler's
tests in ``tests/data/test_sinusoid.py``.
"""
from __future__ import annotations

import json

import numpy as np


def test_main_entry_point_tiny_run(tmp_path):
  from experiments.sinusoid import main
  results = main.main(["--tiny", "--out", str(tmp_path), "--no-progress"])
  saved = json.loads((tmp_path / "results.json").read_text())
  assert (tmp_path / "sinusoid.png").stat().st_size > 10_000
  for name in ("maml", "pretrained"):
    for k in ("K=5", "K=10"):
      ev = saved["methods"][name]["eval"][k]
      assert len(ev["mse_by_step"]) == 4  # steps 0..3 in the tiny config
      assert set(ev["report"]) == {"1", "3"}
      assert all(np.isfinite(ev["mse_by_step"])) and all(c > 0 for c in ev["ci95_by_step"])
  assert results["methods"]["maml"]["iterations"] == 40
  assert "cpu_count" in saved["machine"]
