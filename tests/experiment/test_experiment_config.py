"""Config overrides: every supported type, error messages, diff, variants."""
from __future__ import annotations

import dataclasses
import enum
import types
from typing import Literal

import pytest

from metajax.experiment import config as C


class Mode(enum.Enum):
  FAST = "fast"
  SLOW = "slow"


@dataclasses.dataclass
class Learner:
  meta_lr: float = 1e-3
  inner_steps: int = 1
  first_order: bool = False

  def validate(self):
    if self.inner_steps < 1:
      raise ValueError(f"inner_steps must be >= 1, got {self.inner_steps}")


@dataclasses.dataclass
class Config:
  seed: int = 0
  name: str = "run"
  iterations: int = 100
  eval_query: int | None = None
  hidden: tuple[int, ...] = (40, 40)
  rates: tuple[float, ...] = (0.1,)
  splits: tuple[str, ...] = ("train", "val")
  pair: tuple[int, float] = (1, 2.0)
  init: Literal["maml", "lecun"] = "maml"
  mode: Mode = Mode.FAST
  verbose: bool = True
  learner: Learner = dataclasses.field(default_factory=Learner)

  def validate(self):
    if self.iterations < 1:
      raise ValueError(f"iterations must be >= 1, got {self.iterations}")


def test_scalars_parse_by_declared_type():
  c = C.override(Config(), ["seed=7", "name=hello world", "iterations=1e4",
                            "verbose=no", "init=lecun", "mode=slow"])
  assert (c.seed, c.name, c.iterations, c.verbose, c.init, c.mode) == (
      7, "hello world", 10_000, False, "lecun", Mode.SLOW)
  assert isinstance(c.iterations, int)
  assert C.override(Config(), ["iterations=20_000"]).iterations == 20_000


@pytest.mark.parametrize("text,expected", [
    ("true", True), ("TRUE", True), ("1", True), ("Yes", True),
    ("false", False), ("False", False), ("0", False), ("NO", False)])
def test_bool_spellings(text, expected):
  assert C.override(Config(verbose=not expected),
                    [f"verbose={text}"]).verbose is expected


@pytest.mark.parametrize("text,expected", [
    ("none", None), ("None", None), ("null", None), ("15", 15)])
def test_optional(text, expected):
  assert C.override(Config(eval_query=3), [f"eval_query={text}"]).eval_query == expected


@pytest.mark.parametrize("text", ["5,10", "(5, 10)", "[5,10]", " 5 , 10 "])
def test_int_tuple_forms(text):
  c = C.override(Config(), [f"hidden={text}"])
  assert c.hidden == (5, 10) and isinstance(c.hidden, tuple)


def test_other_tuples():
  c = C.override(Config(), ["rates=0.5,1e-3", "splits=(a, 'b')", "hidden=(7,)",
                            "pair=3,0.25"])
  assert c.rates == (0.5, 1e-3)
  assert c.splits == ("a", "b")
  assert c.hidden == (7,)
  assert c.pair == (3, 0.25)
  assert C.override(Config(), ["hidden=()"]).hidden == ()


def test_nested_key_and_original_untouched():
  base = Config()
  c = C.override(base, ["learner.meta_lr=0.5", "learner.first_order=true"])
  assert c.learner.meta_lr == 0.5 and c.learner.first_order is True
  assert base.learner.meta_lr == 1e-3 and base.learner.first_order is False
  assert c.learner is not base.learner


def test_later_assignment_wins():
  assert C.override(Config(), ["seed=1", "seed=2"]).seed == 2


def test_unknown_key_names_key_suggests_and_lists():
  with pytest.raises(C.ConfigError) as e:
    C.override(Config(), ["iteratoins=5"])
  msg = str(e.value)
  assert "'iteratoins'" in msg
  assert "did you mean 'iterations'" in msg
  assert "seed" in msg and "learner" in msg  # the valid keys


def test_unknown_nested_key_lists_that_level():
  with pytest.raises(C.ConfigError) as e:
    C.override(Config(), ["learner.meta_lrr=1"])
  msg = str(e.value)
  assert "'learner.meta_lrr'" in msg
  assert "did you mean 'learner.meta_lr'" in msg
  assert "inner_steps" in msg and "iterations" not in msg


def test_no_suggestion_for_unrelated_key():
  with pytest.raises(C.ConfigError, match="unknown config key 'zzz'") as e:
    C.override(Config(), ["zzz=1"])
  assert "did you mean" not in str(e.value)


@pytest.mark.parametrize("assignment,key,value,tp", [
    ("seed=abc", "seed", "abc", "int"),
    ("iterations=1.5", "iterations", "1.5", "int"),
    ("learner.meta_lr=fast", "learner.meta_lr", "fast", "float"),
    ("verbose=maybe", "verbose", "maybe", "bool"),
    ("hidden=5,x", "hidden", "5,x", "tuple[int, ...]"),
    ("pair=1,2,3", "pair", "1,2,3", "tuple[int, float]"),
    ("eval_query=lots", "eval_query", "lots", "int | None"),
    ("init=xavier", "init", "xavier", "Literal"),
])
def test_bad_value_names_key_value_and_type(assignment, key, value, tp):
  with pytest.raises(C.ConfigError) as e:
    C.override(Config(), [assignment])
  msg = str(e.value)
  assert f"'{key}'" in msg and f"'{value}'" in msg and tp in msg


def test_assigning_a_nested_config_is_an_error():
  with pytest.raises(C.ConfigError, match="'learner'.*nested config"):
    C.override(Config(), ["learner=3"])


def test_descending_into_a_scalar_is_an_error():
  with pytest.raises(C.ConfigError, match="'seed' is not a nested config"):
    C.override(Config(), ["seed.x=3"])


def test_malformed_assignment():
  with pytest.raises(C.ConfigError, match="expected KEY=VALUE"):
    C.override(Config(), ["seed"])


def test_config_error_is_value_error():
  assert issubclass(C.ConfigError, ValueError)


def test_validate_runs_nested_and_top_level_checks():
  C.validate(Config())
  with pytest.raises(C.ConfigError, match="iterations must be >= 1"):
    C.validate(C.override(Config(), ["iterations=0"]))
  with pytest.raises(C.ConfigError, match="learner: inner_steps must be >= 1"):
    C.validate(C.override(Config(), ["learner.inner_steps=0"]))


def test_to_dict_is_json_friendly_and_nested():
  d = C.to_dict(Config())
  assert d["hidden"] == [40, 40] and d["pair"] == [1, 2.0]
  assert d["learner"] == {"meta_lr": 1e-3, "inner_steps": 1, "first_order": False}
  assert d["mode"] == "fast" and d["eval_query"] is None


def test_diff_reports_changed_and_one_sided_keys_sorted():
  a = {"seed": 0, "learner": {"meta_lr": 1e-3, "steps": 1}, "flag": True,
       "only_a": 1}
  b = {"seed": 7, "learner": {"meta_lr": 0.5, "steps": 1}, "flag": 1,
       "only_b": [1]}
  assert C.diff(a, b) == ["flag", "learner.meta_lr", "only_a", "only_b", "seed"]
  assert C.diff(a, a) == []
  assert C.diff({"x": [1, 2]}, {"x": [1, 2]}) == []
  assert C.diff({"x": float("nan")}, {"x": float("nan")}) == []


def test_load_variant():
  mod = types.SimpleNamespace(__name__="fake_configs", VARIANTS={
      "default": Config, "tiny": lambda: Config(iterations=2)})
  assert C.load_variant(mod, "tiny").iterations == 2
  with pytest.raises(C.ConfigError) as e:
    C.load_variant(mod, "tinny")
  msg = str(e.value)
  assert "'tinny'" in msg and "default, tiny" in msg and "did you mean 'tiny'" in msg
  with pytest.raises(C.ConfigError, match="no VARIANTS"):
    C.load_variant(types.SimpleNamespace(__name__="x"), "default")
