"""Experiment configs: dataclasses with named variants and typed overrides.

A config is a (possibly nested) ``@dataclasses.dataclass``. A configs module
exposes ``VARIANTS: dict[str, Callable[[], Config]]`` (``"default"``,
``"tiny"``, ``"paper"``, ...) and the command line edits a variant with
``--set a.b.c=value``. Values are parsed by the field's declared type, so a
typo or a value of the wrong type is a :class:`ConfigError` naming the key
before any work starts, never a string silently stored in a float field.
"""
from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import pathlib
import types
import typing
from typing import Any, Callable, Mapping, Sequence

import numpy as np

_TRUE = ("true", "1", "yes", "y", "on")
_FALSE = ("false", "0", "no", "n", "off")
_NONE = ("none", "null")


class ConfigError(ValueError):
  """A config key, value or variant that does not exist or does not parse."""


def _is_config(obj) -> bool:
  return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def to_dict(config) -> dict:
  """A JSON-friendly nested dict of ``config`` (tuples become lists).

  Callables are stored by their qualified name and other unknown objects by
  ``str``, so the dict always serialises and compares stably.
  """
  if not _is_config(config):
    raise TypeError(
        f"expected a dataclass instance, got {type(config).__name__}")
  return _plain(config)


def _plain(obj):
  if _is_config(obj):
    return {f.name: _plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)}
  if isinstance(obj, Mapping):
    return {str(k): _plain(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple, set, frozenset)):
    items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
    return [_plain(v) for v in items]
  if obj is None or isinstance(obj, (bool, int, float, str)):
    return obj
  if isinstance(obj, enum.Enum):
    return _plain(obj.value)
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, pathlib.PurePath):
    return str(obj)
  if callable(obj) and hasattr(obj, "__qualname__"):
    return f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"
  return str(obj)


def _type_hints(config) -> dict[str, Any]:
  cls = type(config)
  try:
    return typing.get_type_hints(cls)
  except Exception as e:  # an annotation that names an unimportable type
    raise ConfigError(
        f"cannot resolve the field types of {cls.__qualname__}: {e}") from e


def _fields(config) -> dict[str, dataclasses.Field]:
  return {f.name: f for f in dataclasses.fields(config) if f.init}


def _type_name(tp) -> str:
  if isinstance(tp, type):
    return tp.__name__
  return str(tp).replace("typing.", "")


def _parse(text: str, tp) -> Any:
  """``text`` as a ``tp``; ValueError if it does not parse, TypeError if
  ``tp`` cannot be written as text."""
  s = text.strip()
  origin = typing.get_origin(tp)
  args = typing.get_args(tp)
  if tp is Any:
    return s
  if origin is typing.Union or origin is types.UnionType:
    if type(None) in args and s.lower() in _NONE:
      return None
    for arg in args:
      if arg is type(None):
        continue
      try:
        return _parse(s, arg)
      except (ValueError, TypeError):
        pass
    raise ValueError(s)
  if origin is typing.Literal:
    for choice in args:
      if str(choice) == s or (isinstance(choice, str)
                              and choice == _unquote(s)):
        return choice
    raise ValueError(s)
  if origin in (tuple, list):
    inner = s
    if inner[:1] + inner[-1:] in ("()", "[]"):
      inner = inner[1:-1]
    parts = [p.strip() for p in inner.split(",")]
    if parts and parts[-1] == "":  # "(5,)" or "5,"
      parts.pop()
    if origin is tuple and args and args[-1] is not Ellipsis:
      if len(parts) != len(args):
        raise ValueError(s)
      return tuple(_parse(p, a) for p, a in zip(parts, args))
    item = args[0] if args else str
    values = [_parse(p, item) for p in parts]
    return tuple(values) if origin is tuple else values
  if tp is bool:
    if s.lower() in _TRUE:
      return True
    if s.lower() in _FALSE:
      return False
    raise ValueError(s)
  if tp is int:
    try:
      return int(s)
    except ValueError:
      f = float(s)  # "1e4" is an integer written in float notation
      if not f.is_integer():
        raise
      return int(f)
  if tp is float:
    return float(s)
  if tp is str:
    return _unquote(s)
  if isinstance(tp, type) and issubclass(tp, enum.Enum):
    for member in tp:
      if s in (member.name, str(member.value)):
        return member
    raise ValueError(s)
  if isinstance(tp, type) and issubclass(tp, pathlib.PurePath):
    return tp(_unquote(s))
  raise TypeError(f"fields of type {_type_name(tp)} cannot be set from text")


def _unquote(s: str) -> str:
  if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
    return s[1:-1]
  return s


def _unknown_key(key: str, part: str, prefix: str, names: Sequence[str]):
  close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
  hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
  where = f"under '{prefix[:-1]}'" if prefix else "at the top level"
  return ConfigError(
      f"unknown config key '{key}'{hint}. Valid keys {where}: "
      f"{', '.join(sorted(names))}")


def _set(config, path: list[str], text: str, key: str, prefix: str = ""):
  fields = _fields(config)
  name = path[0]
  if name not in fields:
    raise _unknown_key(key, name, prefix, list(fields))
  current = getattr(config, name)
  if len(path) > 1:
    if not _is_config(current):
      raise ConfigError(
          f"cannot set '{key}': '{prefix}{name}' is not a nested config "
          f"(it holds the {type(current).__name__} {current!r})")
    value = _set(current, path[1:], text, key, prefix + name + ".")
  else:
    if _is_config(current):
      sub = ", ".join(sorted(_fields(current)))
      raise ConfigError(
          f"cannot assign to '{key}': it is a nested config; set one of its "
          f"fields instead ({key}.<field> with <field> one of: {sub})")
    tp = _type_hints(config).get(name, Any)
    try:
      value = _parse(text, tp)
    except TypeError as e:
      raise ConfigError(f"cannot set '{key}': {e}") from e
    except ValueError:
      raise ConfigError(
          f"cannot parse '{text}' for config key '{key}' "
          f"(expected {_type_name(tp)})") from None
  try:
    return dataclasses.replace(config, **{name: value})
  except (ValueError, TypeError) as e:  # rejected by __post_init__
    raise ConfigError(
        f"invalid value '{text}' for config key '{key}': {e}") from e


def override(config, assignments: Sequence[str]):
  """A copy of ``config`` with each ``"a.b.c=value"`` assignment applied.

  Args:
    config: a dataclass instance; it is not modified.
    assignments: ``"key=value"`` strings applied in order; ``key`` is dotted
      for nested configs and ``value`` is parsed by the field's annotation
      (``int``, ``float``, ``str``, ``bool``, ``X | None``, ``tuple[X, ...]``,
      ``Literal[...]``, enums).

  Returns:
    The new config.

  Raises:
    ConfigError: for a malformed assignment, an unknown key (with the valid
      keys and the closest one), an assignment to a nested config, or a value
      that does not parse as the field's type.
  """
  if not _is_config(config):
    raise TypeError(
        f"expected a dataclass instance, got {type(config).__name__}")
  for assignment in assignments:
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ConfigError(
          f"malformed override '{assignment}': expected KEY=VALUE, e.g. seed=1")
    config = _set(config, key.split("."), text, key)
  return config


def validate(config) -> None:
  """Runs the ``validate()`` method of ``config`` and of its nested configs.

  Nested configs are checked first, so an error names the innermost culprit.

  Raises:
    ConfigError: wrapping any ``ValueError`` or ``TypeError`` a ``validate``
      method raises, prefixed with the nested config's dotted name.
  """
  _validate(config, "")


def _validate(config, prefix: str) -> None:
  for f in dataclasses.fields(config):
    value = getattr(config, f.name)
    if _is_config(value):
      _validate(value, prefix + f.name + ".")
  check = getattr(config, "validate", None)
  if callable(check):
    try:
      check()
    except ConfigError as e:
      raise ConfigError(f"{prefix[:-1]}: {e}" if prefix else str(e)) from e
    except (ValueError, TypeError) as e:
      where = f"{prefix[:-1]}: " if prefix else ""
      raise ConfigError(f"invalid config: {where}{e}") from e


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping) and v:
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _same(a, b) -> bool:
  if isinstance(a, bool) or isinstance(b, bool):
    return type(a) is type(b) and a == b
  if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
    return math.isnan(b)
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
  if isinstance(a, Mapping) and isinstance(b, Mapping):
    return not diff(a, b)
  return a == b


def diff(a: Mapping, b: Mapping) -> list[str]:
  """Sorted dotted keys whose values differ between two nested dicts.

  A key present in only one of them counts as differing; ``True`` and ``1``
  differ (a bool field is not an int field).
  """
  fa, fb = _flatten(a), _flatten(b)
  missing = object()
  return sorted(k for k in set(fa) | set(fb)
                if not _same(fa.get(k, missing), fb.get(k, missing)))


def flatten(d: Mapping) -> dict[str, Any]:
  """``{"a": {"b": 1}}`` as ``{"a.b": 1}``: the keys :func:`diff` reports."""
  return _flatten(d)


def load_variant(module, name: str):
  """Builds the variant ``name`` of a configs module's ``VARIANTS``.

  Raises:
    ConfigError: if the module has no ``VARIANTS`` dict, ``name`` is not one
      of them (listing the variants), or the factory returns no dataclass.
  """
  variants: Mapping[str, Callable[[], Any]] | None = getattr(
      module, "VARIANTS", None)
  mod_name = getattr(module, "__name__", repr(module))
  if not isinstance(variants, Mapping):
    raise ConfigError(f"configs module {mod_name} defines no VARIANTS dict")
  if name not in variants:
    close = difflib.get_close_matches(name, list(variants), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ConfigError(
        f"unknown config variant '{name}'{hint}. Variants of {mod_name}: "
        f"{', '.join(sorted(variants))}")
  config = variants[name]()
  if not _is_config(config):
    raise ConfigError(
        f"variant '{name}' of {mod_name} returned a "
        f"{type(config).__name__}, not a dataclass instance")
  return config
