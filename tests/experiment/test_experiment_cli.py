"""The shared main.py flags: variants, --set, validation, workdir refusal."""
from __future__ import annotations

import dataclasses
import json
import types

import pytest

from metajax.experiment import cli, config, workdir


@dataclasses.dataclass
class Learner:
  meta_lr: float = 1e-3


@dataclasses.dataclass
class Config:
  iterations: int = 10
  seed: int = 0
  hidden: tuple[int, ...] = (4,)
  learner: Learner = dataclasses.field(default_factory=Learner)

  def validate(self):
    if self.iterations < 1:
      raise ValueError(f"iterations must be >= 1, got {self.iterations}")


CONFIGS = types.SimpleNamespace(__name__="fake_configs", VARIANTS={
    "default": Config, "tiny": lambda: Config(iterations=2)})


class Recorder:
  """A fake train_and_evaluate that records its calls."""

  def __init__(self):
    self.calls = []

  def __call__(self, config, wd, **kwargs):
    self.calls.append((config, wd, kwargs))
    return {"mse": 0.5}


def _run(argv, tmp_path, train=None, **kwargs):
  return cli.run(argv, configs_module=CONFIGS,
                 train_and_evaluate=train or Recorder(),
                 default_workdir=str(tmp_path / "run"), description="test",
                 prog="exp", **kwargs)


def test_runs_variant_with_overrides(tmp_path):
  train = Recorder()
  out = _run(["--config", "tiny", "--set", "seed=3", "--set",
              "learner.meta_lr=0.5", "--set", "hidden=8,8", "--no-progress",
              "--data-dir", str(tmp_path / "data")], tmp_path, train)
  assert out == {"mse": 0.5}
  [(cfg, wd, kwargs)] = train.calls
  assert cfg == Config(iterations=2, seed=3, hidden=(8, 8),
                       learner=Learner(meta_lr=0.5))
  assert wd == tmp_path / "run"
  assert kwargs == {"data_dir": tmp_path / "data", "progress": False}
  assert json.loads((wd / "config.json").read_text()) == config.to_dict(cfg)


def test_defaults(tmp_path):
  train = Recorder()
  _run([], tmp_path, train)
  [(cfg, _, kwargs)] = train.calls
  assert cfg == Config() and kwargs == {"data_dir": None, "progress": True}


def test_bad_key_exits_2_before_training(tmp_path, capsys):
  train = Recorder()
  with pytest.raises(SystemExit) as e:
    _run(["--set", "seeed=1"], tmp_path, train)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "unknown config key 'seeed'" in err and "did you mean 'seed'" in err
  assert "Traceback" not in err
  assert train.calls == [] and not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv,message", [
    (["--set", "iterations=lots"], "cannot parse 'lots' for config key 'iterations'"),
    (["--set", "iterations=0"], "iterations must be >= 1"),
    (["--config", "huge"], "unknown config variant 'huge'"),
])
def test_bad_value_validation_and_variant_exit_2(tmp_path, capsys, argv, message):
  train = Recorder()
  with pytest.raises(SystemExit) as e:
    _run(argv, tmp_path, train)
  assert e.value.code == 2 and message in capsys.readouterr().err
  assert train.calls == []


def test_raise_errors_gives_the_exception(tmp_path):
  with pytest.raises(config.ConfigError, match="seeed"):
    _run(["--set", "seeed=1"], tmp_path, raise_errors=True)


def test_changed_config_refused_then_fresh_runs(tmp_path, capsys):
  train = Recorder()
  _run(["--set", "seed=0"], tmp_path, train)
  (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
  _run(["--set", "seed=0"], tmp_path, train)  # same config: resumes
  assert len(train.calls) == 2 and (tmp_path / "run" / "metrics.jsonl").exists()
  with pytest.raises(SystemExit) as e:
    _run(["--set", "seed=7"], tmp_path, train)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "seed: 0 -> 7" in err and "--fresh" in err
  assert len(train.calls) == 2
  with pytest.raises(workdir.ConfigMismatchError):
    _run(["--set", "seed=7"], tmp_path, train, raise_errors=True)
  _run(["--set", "seed=7", "--fresh"], tmp_path, train)
  assert len(train.calls) == 3 and train.calls[-1][0].seed == 7
  assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_workdir_flag_and_non_run_folder(tmp_path, capsys):
  other = tmp_path / "mine"
  other.mkdir()
  (other / "data.csv").write_text("1,2")
  train = Recorder()
  with pytest.raises(SystemExit) as e:
    _run(["--workdir", str(other), "--fresh"], tmp_path, train)
  assert e.value.code == 2 and "not a run folder" in capsys.readouterr().err
  assert (other / "data.csv").exists() and train.calls == []
  _run(["--workdir", str(tmp_path / "elsewhere")], tmp_path, train)
  assert train.calls[-1][1] == tmp_path / "elsewhere"


def test_print_config_touches_nothing(tmp_path, capsys):
  train = Recorder()
  assert _run(["--config", "tiny", "--set", "seed=5", "--print-config"],
              tmp_path, train) is None
  printed = json.loads(capsys.readouterr().out)
  assert printed["seed"] == 5 and printed["iterations"] == 2
  assert printed["learner"] == {"meta_lr": 1e-3}
  assert train.calls == [] and not (tmp_path / "run").exists()


def test_extra_flags_are_passed_on(tmp_path):
  train = Recorder()

  def extra(parser):
    parser.add_argument("--plot", action="store_true")
    parser.add_argument("--eval-only", default=None)

  _run(["--plot"], tmp_path, train, extra_flags=extra)
  assert train.calls[0][2] == {"data_dir": None, "progress": True,
                               "plot": True, "eval_only": None}


def test_devices_flag_is_passed_on_and_checked_first(tmp_path, capsys):
  train = Recorder()
  _run(["--devices", "1"], tmp_path, train)
  assert train.calls[0][2]["devices"] == 1
  for argv, message in ((["--devices", "0"], "expected a positive integer"),
                        (["--devices", "many"], "expected a positive integer"),
                        (["--devices", "3"], "only 1 cpu device")):
    train = Recorder()
    with pytest.raises(SystemExit) as e:
      _run(argv + ["--workdir", str(tmp_path / "bad")], tmp_path, train)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert train.calls == [] and not (tmp_path / "bad").exists()


def test_compile_cache_flag_must_name_a_folder(tmp_path, capsys):
  not_a_folder = tmp_path / "file"
  not_a_folder.write_text("x")
  train = Recorder()
  with pytest.raises(SystemExit):
    _run(["--compile-cache", str(not_a_folder)], tmp_path, train)
  assert "is not a folder" in capsys.readouterr().err
  assert train.calls == []
