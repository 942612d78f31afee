"""The run folder: resume on the same config, refuse a changed one, --fresh."""
from __future__ import annotations

import json

import numpy as np
import pytest

from metajax.experiment import workdir as W

CONFIG = {"seed": 0, "hidden": [40, 40], "learner": {"meta_lr": 0.001}}


def _old_run(path):
  W.prepare(path, CONFIG)
  (path / "metrics.jsonl").write_text('{"step": 0}\n')
  W.checkpoint_dir(path).mkdir()
  (W.checkpoint_dir(path) / "checkpoint.npz").write_bytes(b"x")
  (path / "tensorboard").mkdir()
  (path / "tensorboard" / "events.out.tfevents.1").write_bytes(b"e")
  W.write_results(path, {"mse": 1.0})
  (path / "notes.txt").write_text("other")


def test_prepare_creates_folder_and_writes_sorted_config(tmp_path):
  path = W.prepare(tmp_path / "a" / "run", {"seed": 1, "b": (1, 2), "a": 0})
  text = (path / "config.json").read_text()
  assert json.loads(text) == {"a": 0, "b": [1, 2], "seed": 1}
  assert text.index('"a"') < text.index('"b"') < text.index('"seed"')
  assert '\n  "a": 0' in text  # indent 2
  assert [p.name for p in path.iterdir()] == ["config.json"]  # no tmp left


def test_same_config_resumes_and_keeps_files(tmp_path):
  _old_run(tmp_path)
  before = sorted(p.name for p in tmp_path.rglob("*"))
  assert W.prepare(tmp_path, dict(CONFIG, hidden=(40, 40))) == tmp_path
  assert sorted(p.name for p in tmp_path.rglob("*")) == before
  assert (W.checkpoint_dir(tmp_path) / "checkpoint.npz").read_bytes() == b"x"


def test_changed_config_is_refused_naming_every_field(tmp_path):
  _old_run(tmp_path)
  new = {"seed": 7, "hidden": [40, 40], "learner": {"meta_lr": 0.5}, "extra": 1}
  with pytest.raises(W.ConfigMismatchError) as e:
    W.prepare(tmp_path, new)
  msg = str(e.value)
  assert "seed: 0 -> 7" in msg
  assert "learner.meta_lr: 0.001 -> 0.5" in msg
  assert "extra: (absent) -> 1" in msg
  assert "--fresh" in msg
  assert [k for k, _, _ in e.value.differences] == ["extra", "learner.meta_lr", "seed"]
  assert isinstance(e.value, ValueError)
  assert json.loads((tmp_path / "config.json").read_text()) == CONFIG
  assert (tmp_path / "metrics.jsonl").exists()


def test_fresh_clears_the_old_run(tmp_path):
  _old_run(tmp_path)
  new = dict(CONFIG, seed=7)
  W.prepare(tmp_path, new, fresh=True)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
  assert json.loads((tmp_path / "config.json").read_text()) == new


def test_fresh_does_not_follow_symlinks(tmp_path):
  keep = tmp_path / "keep"
  keep.mkdir()
  (keep / "precious.txt").write_text("x")
  run = tmp_path / "run"
  W.prepare(run, CONFIG)
  (run / "link").symlink_to(keep, target_is_directory=True)
  W.prepare(run, CONFIG, fresh=True)
  assert (keep / "precious.txt").exists()
  assert not (run / "link").exists()


@pytest.mark.parametrize("fresh", [False, True])
def test_refuses_a_folder_that_is_not_a_run(tmp_path, fresh):
  (tmp_path / "thesis.tex").write_text("years of work")
  with pytest.raises(W.WorkdirError, match="not a run folder"):
    W.prepare(tmp_path, CONFIG, fresh=fresh)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.tex"]


def test_empty_existing_folder_is_fine(tmp_path):
  W.prepare(tmp_path, CONFIG, fresh=True)
  assert json.loads((tmp_path / "config.json").read_text()) == CONFIG


def test_refuses_a_file(tmp_path):
  f = tmp_path / "f"
  f.write_text("")
  with pytest.raises(W.WorkdirError, match="not a directory"):
    W.prepare(f, CONFIG)


def test_corrupt_config_json_is_an_error_unless_fresh(tmp_path):
  (tmp_path / "config.json").write_text("{trunc")
  with pytest.raises(W.WorkdirError, match="--fresh"):
    W.prepare(tmp_path, CONFIG)
  W.prepare(tmp_path, CONFIG, fresh=True)
  assert json.loads((tmp_path / "config.json").read_text()) == CONFIG


def test_write_results_converts_numpy_and_non_finite(tmp_path):
  path = W.write_results(tmp_path, {
      "mse": np.float32(0.5), "n": np.int64(3), "curve": np.arange(3.0),
      "ci": (np.float64(0.1), 2), "bad": float("nan"), "arr": np.array([1.0, np.inf])})
  assert path == tmp_path / "results.json"
  text = path.read_text()
  assert "NaN" not in text and "Infinity" not in text
  assert json.loads(text) == {"mse": 0.5, "n": 3, "curve": [0.0, 1.0, 2.0],
                              "ci": [0.1, 2], "bad": None, "arr": [1.0, None]}
  assert text.startswith('{\n  "mse"')


def test_extend_allows_only_a_larger_budget_and_records_it(tmp_path):
  cfg = {"iterations": 10, "lr": 0.1, "nested": {"x": 1}}
  W.prepare(tmp_path, cfg)
  (tmp_path / "checkpoints").mkdir()
  for changed in ({**cfg, "iterations": 5}, {**cfg, "iterations": 10.0 + 1,
                                            "lr": 0.2},
                  {**cfg, "iterations": True}):
    with pytest.raises(W.ConfigMismatchError, match="only larger iterations"):
      W.prepare(tmp_path, changed, extend=("iterations",))
  with pytest.raises(W.ConfigMismatchError):  # no extension unless asked
    W.prepare(tmp_path, {**cfg, "iterations": 20})
  assert W.read_extensions(tmp_path) == []
  W.prepare(tmp_path, {**cfg, "iterations": 20}, extend=("iterations",))
  W.prepare(tmp_path, {**cfg, "iterations": 30}, extend=("iterations",))
  assert W.read_config(tmp_path)["iterations"] == 30
  assert (tmp_path / "checkpoints").is_dir()  # the run is kept
  assert [(e["iterations"]["from"], e["iterations"]["to"])
          for e in W.read_extensions(tmp_path)] == [(10, 20), (20, 30)]
  # the same (extended) config resumes without a new record
  W.prepare(tmp_path, {**cfg, "iterations": 30}, extend=("iterations",))
  assert len(W.read_extensions(tmp_path)) == 2


def test_fields_added_since_the_run_began_resume_at_their_defaults(tmp_path):
  stored = {"iterations": 10, "model": {"width": 4}}
  W.prepare(tmp_path, stored)
  defaults = {"iterations": 1, "mode": "batch",
              "model": {"width": 8, "norm": None}}
  newer = {**stored, "mode": "batch", "model": {"width": 4, "norm": None}}
  for changed in ({**newer, "mode": "each"},  # not the default
                  {**newer, "iterations": 20}):  # a budget, not asked
    with pytest.raises(W.ConfigMismatchError):
      W.prepare(tmp_path, changed, defaults=defaults)
  with pytest.raises(W.ConfigMismatchError, match="mode"):
    W.prepare(tmp_path, newer)  # no defaults given: a mismatch
  assert W.read_config(tmp_path) == stored
  W.prepare(tmp_path, {**newer, "iterations": 20}, defaults=defaults,
            extend=("iterations",))
  assert W.read_config(tmp_path) == {**newer, "iterations": 20}
  (entry,) = W.read_extensions(tmp_path)
  assert entry["iterations"] == {"from": 10, "to": 20}
  assert entry["added_with_defaults"] == {"mode": "batch", "model.norm": None}
  W.prepare(tmp_path, {**newer, "iterations": 20}, defaults=defaults)
  assert len(W.read_extensions(tmp_path)) == 1
