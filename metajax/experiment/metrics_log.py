"""Per-step metrics as JSON lines and TensorBoard scalars in the run folder.

``metrics.jsonl`` holds one object per step and split,
``{"step": 12, "split": "train", "loss": 0.31, ...}``, appended so a resumed
run continues the file; non-finite values are ``null`` so every line is
strict JSON. TensorBoard events go to ``tensorboard/`` with tags
``"<split>/<name>"``, written by ``tensorboardX`` or, where only PyTorch's
writer is installed (some accelerator images), ``torch.utils.tensorboard``;
without either the log is JSON lines only and
:attr:`MetricsLog.tensorboard_status` says why.

A run interrupted after its last checkpoint has logged steps that the resumed
run repeats: :meth:`MetricsLog.truncate_after` drops them from the JSON lines
and makes the next TensorBoard writer purge them from its view.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
import uuid
from typing import Mapping

import numpy as np

METRICS_NAME = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _summary_writer():
  """``(SummaryWriter class or None, status)`` from the first writer found."""
  try:
    from tensorboardX import SummaryWriter
    return SummaryWriter, "tensorboardX"
  except Exception as e:  # ImportError, or a protobuf version clash
    x_error = f"{type(e).__name__}: {e}"
  try:
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter, "torch"
  except Exception as e:
    t_error = f"{type(e).__name__}: {e}"
  return None, (f"unavailable: tensorboardX ({x_error}); "
                f"torch.utils.tensorboard ({t_error})")


def _value(v) -> float | None:
  x = float(np.asarray(v))
  return x if math.isfinite(x) else None


def read_metrics(workdir, split: str | None = None) -> list[dict]:
  """The rows of ``workdir/metrics.jsonl`` (of one ``split`` if given).

  A torn last line (a crash mid-write) is skipped.
  """
  path = pathlib.Path(workdir) / METRICS_NAME
  if not path.exists():
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:
        continue
      if isinstance(row, dict) and (split is None or row.get("split") == split):
        rows.append(row)
  return rows


class MetricsLog:
  """Appends scalars to ``metrics.jsonl`` and TensorBoard in ``workdir``.

  The instance is the ``on_metrics(first_step, metrics)`` callback of
  :func:`metajax.fit` (see :meth:`write_many`).

  Attributes:
    path: ``workdir/metrics.jsonl``.
    tensorboard_dir: ``workdir/tensorboard``.
    tensorboard_status: ``"tensorboardX"``, ``"torch"``, ``"disabled"`` or
      ``"unavailable: <reason>"``.
  """

  def __init__(self, workdir, *, tensorboard: bool = True):
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    self.path = workdir / METRICS_NAME
    self.tensorboard_dir = workdir / TENSORBOARD_DIR
    self._file = open(self.path, "a")
    self._writer = None
    self._purge_step: int | None = None
    if tensorboard:
      self._writer_cls, self.tensorboard_status = _summary_writer()
    else:
      self._writer_cls, self.tensorboard_status = None, "disabled"

  def _tb(self):
    # Created on first use, so a truncate_after before it sets purge_step.
    # The suffix keeps a second writer within the same second (the event
    # file name's resolution) from truncating the first one's file.
    if self._writer is None and self._writer_cls is not None:
      self.tensorboard_dir.mkdir(parents=True, exist_ok=True)
      self._writer = self._writer_cls(
          str(self.tensorboard_dir), purge_step=self._purge_step,
          filename_suffix=f".{uuid.uuid4().hex[:12]}")
      self._purge_step = None
    return self._writer

  def _check_open(self):
    if self._file is None:
      raise ValueError(f"MetricsLog for {self.path} is closed")

  def _rows(self, first_step: int, prefix: str,
            metrics: Mapping[str, np.ndarray]) -> list[dict]:
    arrays = {}
    for name, v in metrics.items():
      if name in ("step", "split"):
        raise ValueError(f"metric name '{name}' clashes with a row field")
      a = np.atleast_1d(np.asarray(v))
      if a.ndim != 1:
        raise ValueError(
            f"metric '{name}' has shape {a.shape}; expected one value per step")
      arrays[name] = a
    lengths = {len(a) for a in arrays.values()}
    if len(lengths) > 1:
      raise ValueError(
          "metrics differ in length: "
          + ", ".join(f"{k}={len(a)}" for k, a in arrays.items()))
    n = lengths.pop() if lengths else 0
    return [{"step": int(first_step) + i, "split": prefix,
             **{k: _value(a[i]) for k, a in arrays.items()}}
            for i in range(n)]

  def _emit(self, rows: list[dict]) -> None:
    self._check_open()
    if not rows:
      return
    self._file.write("".join(json.dumps(r, allow_nan=False) + "\n"
                             for r in rows))
    self._file.flush()
    writer = self._tb()
    if writer is not None:
      for r in rows:
        for k, v in r.items():
          if k not in ("step", "split"):
            writer.add_scalar(f"{r['split']}/{k}",
                              math.nan if v is None else v, r["step"])

  def write(self, step: int, scalars: Mapping[str, float],
            prefix: str = "train") -> None:
    """Logs one row: the ``scalars`` of ``step`` for split ``prefix``."""
    self._emit(self._rows(step, prefix, {k: [v] for k, v in scalars.items()}))

  def write_many(self, first_step: int, metrics: Mapping[str, np.ndarray],
                 prefix: str = "train") -> None:
    """Logs per-step arrays of equal length, row ``i`` at ``first_step + i``."""
    self._emit(self._rows(first_step, prefix, metrics))

  def __call__(self, first_step: int,
               metrics: Mapping[str, np.ndarray]) -> None:
    self.write_many(first_step, metrics)

  def truncate_after(self, step: int, split: str | None = None) -> None:
    """Drops the rows with ``step >= step``, for a run resumed at ``step``.

    With ``split``, only that split's rows go (a folder holding several
    models trained one after another resumes one of them); the others stay.
    Rewrites ``metrics.jsonl`` atomically. Without ``split`` the next
    TensorBoard writer starts with ``purge_step=step``, which hides the old
    events from ``step`` on; with it nothing is purged, since a purge would
    hide the other splits too, and a resumed run rewrites the same values
    (resume is exact).
    """
    self._check_open()
    self._file.close()
    self._file = None
    keep = [r for r in read_metrics(self.path.parent)
            if isinstance(r.get("step"), int) and (
                r["step"] < step or
                (split is not None and r.get("split") != split))]
    fd, tmp = tempfile.mkstemp(dir=self.path.parent,
                               prefix=f".{self.path.name}.", suffix=".tmp")
    try:
      with os.fdopen(fd, "w") as f:
        f.write("".join(json.dumps(r, allow_nan=False) + "\n" for r in keep))
        f.flush()
        os.fsync(f.fileno())
      os.replace(tmp, self.path)
    except BaseException:
      pathlib.Path(tmp).unlink(missing_ok=True)
      raise
    finally:
      self._file = open(self.path, "a")
    if split is not None:
      return
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    if self._writer_cls is not None:
      self._purge_step = int(step)

  def flush(self) -> None:
    """Pushes buffered lines and events to disk."""
    if self._file is not None:
      self._file.flush()
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    """Flushes and closes the files; closing twice is harmless."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> MetricsLog:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
