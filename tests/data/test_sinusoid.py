"""Sinusoid tasks (MAML's distribution) and the main entry point end to end."""
import json
import math

import jax
import numpy as np

from metajax.data import sinusoid


def test_sampler_follows_mamls_distribution():
  tasks, p = sinusoid.sample_tasks(jax.random.PRNGKey(0), 2000, 10, 7,
                                   return_params=True)
  assert tasks.support_x.shape == (2000, 10, 1) and tasks.query_y.shape == (2000, 7, 1)
  a, ph = np.asarray(p.amplitude), np.asarray(p.phase)
  assert 0.1 <= a.min() and a.max() <= 5.0 and 0 <= ph.min() and ph.max() <= math.pi
  np.testing.assert_allclose(a.mean(), 2.55, atol=0.1)
  x = np.asarray(tasks.support_x)
  assert -5 <= x.min() and x.max() <= 5
  np.testing.assert_allclose(
      tasks.query_y, p.amplitude[:, None, None] * np.sin(tasks.query_x - p.phase[:, None, None]),
      rtol=1e-5, atol=1e-5)
  same = sinusoid.sample_tasks(jax.random.PRNGKey(0), 2000, 10, 7)
  np.testing.assert_array_equal(same.support_x, tasks.support_x)


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
