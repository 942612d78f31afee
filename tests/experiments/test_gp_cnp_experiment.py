"""The CNP entry point: a tiny run, its results and figure, resume, --fresh."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from experiments import common
from experiments.gp_cnp import configs, main, train
from metajax.experiment import metrics_log

TINY = ["--config", "tiny", "--no-progress"]


class Crash(Exception):
  """Stands in for a run killed mid-training."""


SAMPLER_CALLS = []


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("gp_cnp")
  original = train.sample

  def spy(cfg, rng, num_tasks, *, testing=False):
    SAMPLER_CALLS.append((testing, isinstance(rng, jax.core.Tracer)))
    return original(cfg, rng, num_tasks, testing=testing)

  with pytest.MonkeyPatch.context() as m:
    m.setattr(train, "sample", spy)
    return out, main.main([*TINY, "--workdir", str(out)])


def test_training_samples_on_device_and_compiles_once(tiny_run):
  # fit draws one example batch on the host, then the sampler is traced into
  # the compiled chunk once: two chunks of 3 steps, one trace, no host call
  # per step.
  assert [c for c in SAMPLER_CALLS if not c[0]] == [(False, False),
                                                     (False, True)]
  cfg = configs.tiny()
  shapes = {jax.tree_util.tree_map(np.shape, train.sample(
      cfg, jax.random.PRNGKey(s), cfg.meta_batch)) for s in range(8)}
  assert len(shapes) == 1
  assert configs.paper().iterations == 200_000


def test_tiny_run(tiny_run):
  out, r = tiny_run
  saved = json.loads((out / "results.json").read_text())
  assert saved == r
  test = saved["test"]
  ll = test["log_likelihood_per_target"]
  assert np.isfinite(ll["mean"]) and ll["ci95"] > 0
  # The harness's headline metric is the NLL: the log-likelihood negated.
  assert test["metric"] == "loss" and test["mean"] == pytest.approx(-ll["mean"])
  assert test["num_tasks"] == 8 and test["ci95"] > 0 and test["steps"] is None
  assert (out / saved["figures"][0]).stat().st_size > 5_000
  assert r["train"]["loss_curve"][-1][0] == 6
  assert r["train"]["steps_trained"] == 6 and r["budget"] == "shortened"
  assert r["learner"]["encoder_sizes"] == [16, 16]
  assert {"commit", "dirty"} <= set(saved["run"]["git"])
  assert saved["run"]["jax"] and saved["run"]["device_kinds"]
  assert saved["run"]["wall_time_s"] > 0
  rows = metrics_log.read_metrics(out, split="cnp/train")
  assert [row["step"] for row in rows] == list(range(6))


def test_interrupted_run_resumes_to_the_same_numbers(tiny_run, tmp_path,
                                                     monkeypatch):
  _, whole = tiny_run
  out = tmp_path / "run"
  original = common.ModelMetrics.__call__

  def crash_after_logging(self, first_step, metrics):
    original(self, first_step, metrics)
    if first_step == 3:  # rows 3..5 logged, their checkpoint not written
      raise Crash

  monkeypatch.setattr(common.ModelMetrics, "__call__", crash_after_logging)
  with pytest.raises(Crash):
    main.main([*TINY, "--workdir", str(out)])
  assert not (out / "results.json").exists()
  assert len(metrics_log.read_metrics(out)) == 6
  monkeypatch.setattr(common.ModelMetrics, "__call__", original)
  r = main.main([*TINY, "--workdir", str(out)])
  assert r["train"]["resumed_from_step"] == 3
  assert r["train"]["steps_trained"] == 3
  assert [row["step"] for row in metrics_log.read_metrics(out)] == list(
      range(6))
  assert r["train"]["loss_curve"] == whole["train"]["loss_curve"]
  assert r["test"]["mean"] == whole["test"]["mean"]


def test_fresh_starts_over(tiny_run, tmp_path, capsys):
  out = tmp_path / "run"
  main.main([*TINY, "--workdir", str(out)])
  with pytest.raises(SystemExit) as e:
    main.main([*TINY, "--set", "seed=7", "--workdir", str(out)])
  assert e.value.code == 2 and "seed: 0 -> 7" in capsys.readouterr().err
  r = main.main([*TINY, "--set", "seed=7", "--fresh", "--workdir", str(out)])
  assert r["train"]["resumed_from_step"] == 0
  assert r["train"]["steps_trained"] == 6 and r["run"]["seed"] == 7
  assert json.loads((out / "config.json").read_text())["seed"] == 7
  assert [row["step"] for row in metrics_log.read_metrics(out)] == list(
      range(6))


def test_the_anp_runs_on_the_same_tasks(tmp_path):
  r = main.main([*TINY, "--workdir", str(tmp_path), "--set", "method=anp"])
  assert r["method"] == "anp" and r["learner"]["class"] == "NeuralProcess"
  assert r["learner"]["attention"] == "multihead"
  assert r["figures"] == ["anp_gp_0.png"]
  assert np.isfinite(r["test"]["log_likelihood_per_target"]["mean"])
  assert r["paper_iterations"] == 100_000


def test_family_table_and_figure_of_three_models(tmp_path, capsys):
  for method in ("cnp", "np", "anp"):
    main.main([*TINY, "--workdir", str(tmp_path / method), "--set",
               f"method={method}", "--set", "plots=0"])
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    main.main(["--family", str(tmp_path)])
  assert e.value.code == 0
  out = capsys.readouterr().out
  rows = [l for l in out.splitlines() if l.startswith("| ")][1:]  # no header
  assert [r.split(" | ")[1] for r in rows] == ["CNP", "NP", "ANP"]
  assert (tmp_path / "family.png").stat().st_size > 10_000
