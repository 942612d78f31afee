"""What the three experiments share: one skeleton, thin mains, early errors.

Each ``experiments/<name>/main.py`` only hands its ``configs`` and
``train.train_and_evaluate`` to :func:`metajax.experiment.cli.run`, so the
flags, validation and run-folder rules are the same everywhere. These tests
never train: a bad value must stop the run before ``train_and_evaluate``.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import pathlib

import pytest

from metajax.experiment import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENTS = ("sinusoid", "omniglot", "gp_cnp")


def _modules(name):
  return (importlib.import_module(f"experiments.{name}.main"),
          importlib.import_module(f"experiments.{name}.configs"),
          importlib.import_module(f"experiments.{name}.train"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_main_is_a_thin_call_of_cli_run(name):
  path = ROOT / "experiments" / name / "main.py"
  tree = ast.parse(path.read_text())
  [main] = [n for n in tree.body
            if isinstance(n, ast.FunctionDef) and n.name == "main"]
  [stmt] = main.body
  assert isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.Call)
  assert ast.unparse(stmt.value.func) == "cli.run"
  kw = {k.arg: ast.unparse(k.value) for k in stmt.value.keywords}
  assert kw["configs_module"] == "configs"
  assert kw["train_and_evaluate"] == "train.train_and_evaluate"
  assert kw["description"] == "__doc__"
  # No training or evaluation code in the flag layer.
  imported = {a.name if isinstance(n, ast.Import) else n.module
              for n in ast.walk(tree)
              if isinstance(n, (ast.Import, ast.ImportFrom))
              for a in (n.names if isinstance(n, ast.Import) else [n])}
  assert imported <= {"__future__", "argparse", f"experiments.{name}",
                      "metajax.experiment"}, imported
  main_mod, configs, train = _modules(name)
  assert (ROOT / "experiments" / name / "__main__.py").read_text().count(
      "main()") == 1
  assert callable(train.train_and_evaluate) and callable(main_mod.main)
  assert not (ROOT / "experiments" / name / "config.py").exists()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_variant_validates(name):
  _, configs, _ = _modules(name)
  assert {"default", "tiny"} <= set(configs.VARIANTS)
  for variant in configs.VARIANTS:
    cfg = config_lib.load_variant(configs, variant)
    assert dataclasses.is_dataclass(cfg)
    config_lib.validate(cfg)


def _never_called(*args, **kwargs):
  raise AssertionError("train_and_evaluate ran despite a bad config")


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("override,named", [
    ("iterations=-1", "iterations"), ("bogus=1", "bogus"),
    ("eval_tasks=0", "eval_tasks"), ("steps_per_call=0", "steps_per_call"),
    ("checkpoint_every=0", "checkpoint_every"), ("meta_batch=0", "meta_batch"),
    ("iterations=0", "iterations")])
def test_bad_value_exits_2_naming_the_field_before_training(
    name, override, named, tmp_path, monkeypatch, capsys):
  main, _, train = _modules(name)
  monkeypatch.setattr(train, "train_and_evaluate", _never_called)
  workdir = tmp_path / "run"
  with pytest.raises(SystemExit) as e:
    main.main(["--config", "tiny", "--set", override, "--workdir",
               str(workdir), "--no-progress"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert named in err and "Traceback" not in err
  assert not workdir.exists()


def test_print_config_lists_fields_without_running(monkeypatch, capsys,
                                                   tmp_path):
  for name in EXPERIMENTS:
    main, configs, train = _modules(name)
    monkeypatch.setattr(train, "train_and_evaluate", _never_called)
    assert main.main(["--config", "tiny", "--print-config", "--workdir",
                      str(tmp_path / name)]) is None
    out = capsys.readouterr().out
    for f in dataclasses.fields(configs.VARIANTS["tiny"]()):
      assert f'"{f.name}"' in out
    assert not (tmp_path / name).exists()
