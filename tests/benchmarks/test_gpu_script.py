"""benchmarks/gpu.py, the accelerator benchmark, on the CPU with a tiny budget."""
import json
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu  # noqa: E402

TINY = ["--peak-n", "64", "--step-budget-s", "0.05", "--max-steps", "2"]


@pytest.fixture(autouse=True)
def _restore_conv_impl(monkeypatch):
  from metajax.models import ops
  monkeypatch.setattr(ops, "IMPL", ops.IMPL)


def test_every_workload_is_defined_for_both_sides():
  specs = gpu.load_workloads(gpu.DEFAULT_TORCH_REF)
  own = json.loads(gpu.OWN_WORKLOADS.read_text())["configs"]
  assert set(own) <= set(specs["configs"]) and set(own) <= set(specs["matrix"])
  if gpu.DEFAULT_TORCH_REF.exists():
    assert set(gpu.ORDER) == set(specs["configs"])
  mini = specs["configs"]["mini5w1s_maml2"]
  assert mini["model"]["in_shape"] == [3, 84, 84] and mini["outer_opt"]["lr"] == 1e-3


def test_tiny_run_writes_every_stage(tmp_path, shared_data_dir):
  out = tmp_path / "results.json"
  gpu.main(["--out", str(out), "--minutes", "5", "--only", "sine_maml1",
            "--accuracy-cell", "tiny", "--accuracy-iterations", "2",
            "--data-dir", str(shared_data_dir),
            # an interpreter without PyTorch: recorded, not fatal
            "--torch-python", sys.executable, *TINY])
  saved = json.loads(out.read_text())
  assert saved["device"]["platform"] == "cpu"
  assert saved["peaks"]["jax"]["bfloat16_gflops"] > 0
  run = saved["runs"]["sine_maml1"]
  assert set(run["jax"]) == {"f32_custom", "bf16_custom"}
  for variant in run["jax"].values():
    assert variant["median_ms"] > 0 and variant["compile_s"] > 0
    assert np.isfinite(variant["last_loss"])
  try:
    import torch  # noqa: F401
  except ImportError:
    assert "error" in saved["torch_worker"]
    assert "error" in run["torch"]
  acc = saved["bf16_accuracy"]
  for dtype in ("float32", "bfloat16"):
    assert 0.0 <= acc[dtype]["test_accuracy"] <= 1.0, acc
  assert saved["finished"]


def test_a_workload_that_does_not_fit_is_skipped(tmp_path):
  out = tmp_path / "results.json"
  gpu.main(["--out", str(out), "--minutes", "0", "--only", "sine_maml2",
            "--accuracy-cell", "none", "--no-torch", *TINY])
  saved = json.loads(out.read_text())
  assert saved["runs"]["sine_maml2"] == {"skipped": "time budget"}


def test_missing_data_is_refused_before_any_work(tmp_path, capsys):
  out = tmp_path / "results.json"
  with pytest.raises(SystemExit):
    gpu.main(["--out", str(out), "--data-dir", str(tmp_path), "--no-torch", *TINY])
  assert "cannot start" in capsys.readouterr().err
  assert not out.exists()


def test_unknown_workload_is_refused(tmp_path, capsys):
  with pytest.raises(SystemExit):
    gpu.main(["--out", str(tmp_path / "r.json"), "--only", "omni1w1s",
              "--accuracy-cell", "none", "--no-torch"])
  assert "unknown workloads" in capsys.readouterr().err


def test_auto_conv_impl_probes_both_and_keeps_the_faster(tmp_path):
  out = tmp_path / "results.json"
  gpu.main(["--out", str(out), "--minutes", "5", "--only", "omni5w5s_proto",
            "--conv-impl", "auto", "--accuracy-cell", "none", "--no-torch", *TINY])
  saved = json.loads(out.read_text())
  assert set(saved["runs"]["omni5w5s_proto"]["jax"]) == {
      "f32_custom", "bf16_custom", "f32_lax", "bf16_lax"}
  probe = saved["conv_impl"]["probe_ms"]
  assert saved["conv_impl"]["chosen"] == min(probe, key=probe.get)
