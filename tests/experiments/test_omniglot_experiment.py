"""The Omniglot entry point runs tiny configurations end to end on real data."""
import json

import pytest

from experiments.omniglot import config, main


@pytest.mark.parametrize("method", ["maml", "protonet", "reptile"])
def test_tiny_run_writes_results(method, tmp_path, shared_data_dir, omniglot_cache_dir):
  out = tmp_path / method
  results = main.main(["--method", method, "--tiny", "--out", str(out),
                       "--data-dir", str(shared_data_dir),
                       "--cache-dir", str(omniglot_cache_dir), "--no-progress"])
  saved = json.loads((out / "results.json").read_text())
  assert saved["method"] == method and results["test"]["num_tasks"] == 6
  assert saved["protocol"]["split"] == "vinyals"
  assert saved["protocol"]["test_classes"] == 423
  assert 0.0 <= saved["test"]["mean"] <= 1.0
  assert saved["train"]["iterations"] == 4
  table = main.main(["--table", str(tmp_path)])
  assert f"| {method} |" in table


def test_every_registered_method_has_a_spec_and_unknown_is_an_error():
  from metajax.algorithms import registry as learners
  assert set(config.METHODS) <= set(learners.names())
  with pytest.raises(ValueError, match="unknown method"):
    config.method_spec("nope")
