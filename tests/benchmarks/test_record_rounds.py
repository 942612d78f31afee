"""benchmarks/maml_vs_torch.record: one entry per run, or rounds summarised
by their medians and the ratios' range."""
import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import maml_vs_torch  # noqa: E402


def _entry(jax_ms, torch_ms):
  return {"jax": {"median_ms": jax_ms},
          "torch": {"autograd": {"median_ms": torch_ms}, "failed": {"error": "x"}}}


def test_single_run_keeps_the_entry(tmp_path):
  out = tmp_path / "r.json"
  results = {"runs": {}}
  maml_vs_torch.record(results, "w", _entry(50.0, 75.0), str(out))
  assert results["runs"]["w"]["speedup_vs_best_torch"] == pytest.approx(1.5)
  assert json.loads(out.read_text()) == results


def test_rounds_report_medians_and_range(tmp_path):
  out = tmp_path / "r.json"
  results = {"rounds": 3, "runs": {}}
  for jax_ms, torch_ms in [(50.0, 75.0), (60.0, 66.0), (40.0, 80.0)]:
    maml_vs_torch.record(results, "w", _entry(jax_ms, torch_ms), str(out))
  run = json.loads(out.read_text())["runs"]["w"]
  assert [r["speedup_vs_best_torch"] for r in run["rounds"]] == pytest.approx([1.5, 1.1, 2.0])
  assert run["speedup_vs_best_torch"] == pytest.approx(1.5)
  assert run["speedup_range"] == pytest.approx([1.1, 2.0])
  assert run["jax_median_ms"] == 50.0 and run["torch_best_ms"] == 75.0


def test_rounds_without_torch_have_no_ratio(tmp_path):
  results = {"rounds": 2, "runs": {}}
  for _ in range(2):
    maml_vs_torch.record(results, "w", {"jax": {"median_ms": 10.0}}, str(tmp_path / "r.json"))
  assert "speedup_vs_best_torch" not in results["runs"]["w"]
  assert len(results["runs"]["w"]["rounds"]) == 2


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_rounds_must_be_a_positive_integer(bad, capsys):
  import argparse
  p = argparse.ArgumentParser()
  maml_vs_torch.add_rounds_argument(p)
  assert p.parse_args(["--rounds", "3"]).rounds == 3
  with pytest.raises(SystemExit):
    p.parse_args(["--rounds", bad])
  assert "positive integer" in capsys.readouterr().err
