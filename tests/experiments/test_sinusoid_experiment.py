"""The sinusoid entry point runs a tiny configuration and writes its results.

It exercises ``experiments/`` (training, evaluation, the figure, the run
folder), not :mod:`metajax.data`, so it lives here rather than next to the
task sampler's tests in ``tests/data/test_sinusoid.py``.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from experiments.sinusoid import configs, main, train
from metajax.experiment import config as config_lib
from metajax.experiment import metrics_log

def test_default_variant_is_the_setting_that_reproduces_the_table():
  default = configs.VARIANTS["default"]()
  assert default.iterations == configs.PAPER_ITERATIONS == 70_000
  assert default.inner_lr == configs.CODE_INNER_LR == 0.001
  assert default.baseline_inner_lr == configs.STATED_INNER_LR == 0.01
  assert "0.001 (cbfinn/maml's default --update_lr)" in configs.setting(
      default)
  stated = configs.VARIANTS["stated_step"]()
  assert dataclasses.asdict(configs.VARIANTS["paper"]()) == \
      dataclasses.asdict(stated)
  assert (stated.iterations, stated.inner_lr, stated.baseline_inner_lr) == (
      70_000, 0.01, None)
  assert configs.VARIANTS["short"]().iterations == 20_000
  models = train.learners(default)
  assert (models["maml"].inner_lr, models["pretrained"].inner_lr) == (
      0.001, 0.01)
  assert train.learners(stated)["pretrained"].inner_lr == 0.01


@pytest.mark.parametrize("override,named", [
    ("report_steps=1,11", "report_steps"), ("init=xavier", "init"),
    ("eval_shots=5,0", "eval_shots"), ("eval_steps=-1", "eval_steps"),
    ("baseline_iterations=0", "baseline_iterations"),
    ("inner_lr=0", "inner_lr"), ("hidden=8,0", "hidden"),
    ("baseline_inner_lr=-1", "baseline_inner_lr"),
    ("eval_query=0", "eval_query"), ("cavia_context=0", "cavia_context"),
    ("cavia_inner_lr=0", "cavia_inner_lr")])
def test_validate_names_the_field(override, named):
  cfg = config_lib.override(configs.tiny(), [override])
  with pytest.raises(config_lib.ConfigError, match=named):
    config_lib.validate(cfg)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """One tiny run: its workdir, returned results and printed summary."""
  out = tmp_path_factory.mktemp("sinusoid")
  results = main.main(["--config", "tiny", "--workdir", str(out),
                       "--no-progress"])
  return out, results


def test_tiny_run_writes_results(tiny_run):
  out, results = tiny_run
  saved = json.loads((out / "results.json").read_text())
  assert saved == results
  assert (out / "sinusoid.png").stat().st_size > 10_000
  for name in ("maml", "pretrained"):
    for k in ("K=5", "K=10"):
      ev = saved["methods"][name]["eval"][k]
      assert len(ev["mse_by_step"]) == 4  # steps 0..3 in the tiny config
      assert set(ev["report"]) == {"1", "3"}
      assert all(np.isfinite(ev["mse_by_step"]))
      assert all(c > 0 for c in ev["ci95_by_step"])
      assert ev["num_tasks"] == 16 and ev["steps"] == 3
      assert ev["mean"] == ev["mse_by_step"][-1] and ev["ci95"] > 0
      assert len(ev["diverged_tasks_by_step"]) == 4
  assert results["methods"]["maml"]["iterations"] == 40
  assert results["methods"]["maml"]["steps_trained"] == 40
  assert saved["budget"] == "shortened" and saved["paper_k5"]["maml"]["5"]
  assert saved["config"] == config_lib.to_dict(configs.tiny())
  run = saved["run"]
  assert {"commit", "dirty"} <= set(run["git"])
  assert run["jax"] and run["device_kinds"] and run["wall_time_s"] > 0
  assert "cpu_count" in run["machine"]


def test_metrics_log_one_row_per_step_and_model(tiny_run):
  out, _ = tiny_run
  for model in ("maml_K10", "pretrained_K10"):
    rows = metrics_log.read_metrics(out, split=f"{model}/train")
    assert [r["step"] for r in rows] == list(range(40))
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert (out / "checkpoints" / model / "checkpoint.npz").is_file()


def test_rerun_resumes_and_a_changed_config_is_refused(tiny_run, capsys):
  out, first = tiny_run
  lines = (out / "metrics.jsonl").read_text()
  again = main.main(["--config", "tiny", "--workdir", str(out),
                     "--no-progress"])
  printed = capsys.readouterr().out
  assert "(paper 0.67, " in printed and "(paper 2.41, " in printed
  assert "our 95% interval)" in printed
  assert printed.startswith("setting: MAML inner step 0.01 (the paper's "
                            "stated step), pretrained fine-tuned at 0.01")
  for name in ("maml", "pretrained"):
    entry = again["methods"][name]
    assert entry["steps_trained"] == 0 and entry["resumed_from_step"] == 40
    assert entry["eval"] == first["methods"][name]["eval"]
  assert (out / "metrics.jsonl").read_text() == lines
  with pytest.raises(SystemExit) as e:
    main.main(["--config", "tiny", "--set", "seed=7", "--workdir", str(out),
               "--no-progress"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "seed: 0 -> 7" in err and "--fresh" in err
  assert json.loads((out / "config.json").read_text())["seed"] == 0


def test_cavia_trains_beside_maml_on_the_same_tasks(tmp_path):
  results = main.main(["--config", "tiny", "--workdir", str(tmp_path),
                       "--no-progress", "--set", "cavia=True",
                       "--set", "eval_shots=5"])
  cavia = results["methods"]["cavia"]
  assert cavia["iterations"] == 40 and cavia["steps_trained"] == 40
  ev = cavia["eval"]["K=5"]
  assert len(ev["mse_by_step"]) == 4 and all(np.isfinite(ev["mse_by_step"]))
  assert "CAVIA: 5 context parameters" in results["setting"]
  rows = metrics_log.read_metrics(tmp_path, split="cavia_K10/train")
  assert [r["step"] for r in rows] == list(range(40))
