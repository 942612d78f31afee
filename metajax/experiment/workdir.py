"""The run folder: one config, its checkpoints, metrics and results.

A workdir holds ``config.json`` (written first), ``checkpoints/``,
``metrics.jsonl``, ``tensorboard/`` and ``results.json``. :func:`prepare`
makes sure the folder never mixes two runs: rerunning with the same config
resumes from its checkpoints, a changed config is refused with the differing
fields, and ``fresh=True`` deletes the old run first. The one change allowed
is a larger budget (``extend=('iterations',)``): the run continues from its
checkpoint as if it had been given the larger budget from the start, which
the experiment must guarantee (nothing it ran may depend on the budget), and
``extensions.json`` records each extension. A non-empty folder
without ``config.json`` is not a run folder and is never written to or
deleted, so a mistyped ``--workdir .`` cannot wipe a user's files.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any, Mapping

import numpy as np

from metajax.experiment import config as config_lib

CONFIG_NAME = "config.json"
RESULTS_NAME = "results.json"
CHECKPOINTS = "checkpoints"
EXTENSIONS_NAME = "extensions.json"


class WorkdirError(ValueError):
  """The workdir cannot hold this run (not a run folder, unreadable config)."""


class ConfigMismatchError(WorkdirError):
  """The workdir holds a run of another config.

  Attributes:
    differences: ``(dotted_key, old, new)`` for each differing field; a key
      missing on one side has the value :data:`ABSENT` there.
  """

  def __init__(self, message: str, differences: list[tuple[str, Any, Any]]):
    super().__init__(message)
    self.differences = differences


class _Absent:
  def __repr__(self):
    return "(absent)"


ABSENT = _Absent()


def jsonable(obj):
  """``obj`` with numpy/JAX arrays and scalars as Python lists and numbers.

  Tuples become lists, paths strings and non-finite floats ``None``, so the
  result is strict JSON (``json.dumps(..., allow_nan=False)`` accepts it).
  """
  if isinstance(obj, Mapping):
    return {str(k): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [jsonable(v) for v in obj]
  if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
    return obj
  if isinstance(obj, float):
    return obj if math.isfinite(obj) else None
  if isinstance(obj, pathlib.PurePath):
    return str(obj)
  if isinstance(obj, np.generic) or hasattr(obj, "__array__"):
    return jsonable(np.asarray(obj).tolist())
  if hasattr(obj, "__dataclass_fields__") and not isinstance(obj, type):
    return jsonable(config_lib.to_dict(obj))
  raise TypeError(f"cannot write a {type(obj).__name__} to JSON: {obj!r}")


def write_json_atomic(path, obj, *, sort_keys: bool = False) -> pathlib.Path:
  """Writes ``jsonable(obj)`` to ``path`` via a synced temporary file + rename.

  A crash leaves either the old file or the new one, never half of one.
  """
  path = pathlib.Path(path)
  text = json.dumps(jsonable(obj), indent=2, sort_keys=sort_keys,
                    allow_nan=False) + "\n"
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                             suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
  return path


def checkpoint_dir(workdir) -> pathlib.Path:
  """``workdir/checkpoints``: where :func:`metajax.fit` saves and resumes."""
  return pathlib.Path(workdir) / CHECKPOINTS


def read_config(workdir) -> dict | None:
  """The config dict stored in ``workdir``, or ``None`` if there is none.

  Raises:
    WorkdirError: if ``config.json`` exists but is not a JSON object.
  """
  path = pathlib.Path(workdir) / CONFIG_NAME
  if not path.exists():
    return None
  try:
    stored = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise WorkdirError(
        f"cannot read {path}: {e}; pass --fresh to delete this run and start "
        "over, or use another --workdir") from e
  if not isinstance(stored, dict):
    raise WorkdirError(
        f"{path} holds no config object; pass --fresh to start over")
  return stored


def _fmt(value) -> str:
  return repr(value) if value is ABSENT else json.dumps(value)


def _clear(path: pathlib.Path) -> None:
  for entry in path.iterdir():
    if entry.is_dir() and not entry.is_symlink():
      shutil.rmtree(entry)
    else:
      entry.unlink()


def prepare(workdir, config_dict: Mapping, *, fresh: bool = False,
            extend: tuple[str, ...] = (),
            defaults: Mapping | None = None) -> pathlib.Path:
  """Creates or reopens the run folder ``workdir`` for ``config_dict``.

  Args:
    workdir: the run folder; created if missing.
    config_dict: the run's config (e.g. :func:`config.to_dict`), JSON-able.
    fresh: delete the previous run in ``workdir`` (every file in it) and
      start over.
    extend: top-level config fields (budgets, e.g. ``('iterations',)``)
      that may grow: a stored config that differs only by larger values of
      them is replaced by ``config_dict`` and the change appended to
      ``extensions.json``; the caller resumes from the checkpoint.
    defaults: the config class's defaults (nested like ``config_dict``). A
      field absent from the stored config whose new value is its default was
      added to the config class after the run began; such fields are not a
      mismatch (a field is only ever added with a default that keeps the
      earlier behaviour). The stored config gains them, and
      ``extensions.json`` records them under ``"added_with_defaults"``.

  Returns:
    ``workdir`` as a path. With an identical stored config the folder is left
    as it is, and the caller resumes from :func:`checkpoint_dir`.

  Raises:
    ConfigMismatchError: ``workdir`` holds a run of another config and
      ``fresh`` is false; the message lists each differing field as
      ``key: old -> new``.
    WorkdirError: ``workdir`` is a file, or a non-empty folder without
      ``config.json`` (not a run folder, so never written to or deleted).
  """
  path = pathlib.Path(workdir).expanduser()
  new = json.loads(json.dumps(jsonable(config_dict), allow_nan=False))
  if path.exists() and not path.is_dir():
    raise WorkdirError(f"workdir {path} exists and is not a directory")
  path.mkdir(parents=True, exist_ok=True)
  has_config = (path / CONFIG_NAME).exists()
  if not has_config and any(path.iterdir()):
    raise WorkdirError(
        f"workdir {path} is not empty and holds no {CONFIG_NAME}, so it is not "
        "a run folder; refusing to write into (or, with --fresh, delete) it. "
        "Use a new or empty directory")
  if fresh:
    resolved = path.resolve()
    if resolved in (pathlib.Path(resolved.anchor), pathlib.Path.home()):
      raise WorkdirError(f"refusing to delete the contents of {resolved}")
    _clear(path)
  elif has_config:
    old = read_config(path)
    keys = config_lib.diff(old, new)
    if not keys:
      return path
    flat_old, flat_new = config_lib.flatten(old), config_lib.flatten(new)
    added = _added_with_defaults(flat_old, flat_new, keys, defaults)
    keys = [k for k in keys if k not in added]
    if not keys or (extend and _extends(old, new, keys, extend)):
      entry = {k: {"from": old[k], "to": new[k]} for k in keys}
      if added:
        entry["added_with_defaults"] = added
      history = read_extensions(path)
      history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry})
      write_json_atomic(path / EXTENSIONS_NAME, history)
      write_json_atomic(path / CONFIG_NAME, new, sort_keys=True)
      return path
    differences = [(k, flat_old.get(k, ABSENT), flat_new.get(k, ABSENT))
                   for k in keys]
    changes = "; ".join(f"{k}: {_fmt(o)} -> {_fmt(n)}"
                        for k, o, n in differences)
    hint = (f"; only larger {', '.join(extend)} may extend it"
            if extend else "")
    raise ConfigMismatchError(
        f"workdir {path} holds a run of another config ({changes}){hint}; "
        "pass --fresh to delete that run and start over, or use another "
        "--workdir", differences)
  write_json_atomic(path / CONFIG_NAME, new, sort_keys=True)
  return path


def _added_with_defaults(flat_old: dict, flat_new: dict, keys,
                         defaults: Mapping | None) -> dict:
  """The differing ``keys`` absent from the stored config and at their
  default in the new one (fields added after the run began)."""
  if defaults is None:
    return {}
  flat_defaults = config_lib.flatten(
      json.loads(json.dumps(jsonable(defaults), allow_nan=False)))
  return {k: flat_new[k] for k in keys
          if k not in flat_old and k in flat_new and k in flat_defaults
          and not config_lib.diff({k: flat_new[k]}, {k: flat_defaults[k]})}


def _extends(old: dict, new: dict, keys, extend) -> bool:
  """Whether ``new`` differs from ``old`` only by larger numbers in the
  top-level fields ``extend``."""
  def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)
  return all(k in extend and number(old.get(k)) and number(new.get(k))
             and new[k] > old[k] for k in keys)


def read_extensions(workdir) -> list:
  """The budget extensions recorded in ``workdir`` (oldest first; empty if
  the run was never extended)."""
  path = pathlib.Path(workdir) / EXTENSIONS_NAME
  if not path.exists():
    return []
  try:
    history = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise WorkdirError(f"cannot read {path}: {e}") from e
  if not isinstance(history, list):
    raise WorkdirError(f"{path} holds no list of extensions")
  return history


def write_results(workdir, results: Mapping) -> pathlib.Path:
  """Atomically writes ``results`` (numpy values converted) to ``results.json``.

  Non-finite numbers are written as ``null``, so the file is strict JSON.

  Returns:
    The path of ``results.json``.
  """
  path = pathlib.Path(workdir)
  path.mkdir(parents=True, exist_ok=True)
  return write_json_atomic(path / RESULTS_NAME, results)
