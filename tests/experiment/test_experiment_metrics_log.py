"""Metrics log: JSON lines (strict JSON), truncation on resume, TensorBoard."""
from __future__ import annotations

import json
import math
import struct
import sys

import numpy as np
import pytest

from metajax.experiment import metrics_log as M


def _lines(path):
  return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def _events(logdir) -> list:
  """Every Event in ``logdir``: the TFRecord framing, parsed with the
  protobuf definitions tensorboardX ships (no tensorboard install needed)."""
  event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
  files = []
  for path in logdir.glob("events.out.tfevents.*"):
    data, pos, events = path.read_bytes(), 0, []
    while pos < len(data):
      (n,) = struct.unpack("<Q", data[pos:pos + 8])
      events.append(event_pb2.Event.FromString(data[pos + 12:pos + 12 + n]))
      pos += 12 + n + 4
    files.append(events)
  files.sort(key=lambda events: events[0].wall_time)
  return [e for events in files for e in events]


def _tb_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
  """``tag -> [(step, value)]`` read back from the event files in ``logdir``."""
  try:
    from tensorboard.backend.event_processing import event_accumulator
  except ImportError:
    event_accumulator = None
  if event_accumulator is not None:
    acc = event_accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)]
            for t in acc.Tags()["scalars"]}
  out: dict[str, list] = {}
  for event in _events(logdir):
    for v in event.summary.value:
      value = v.simple_value if v.HasField("simple_value") else float(
          np.frombuffer(v.tensor.tensor_content, np.float32)[0]
          if v.tensor.tensor_content else v.tensor.float_val[0])
      out.setdefault(v.tag, []).append((event.step, value))
  return out


def test_write_and_write_many_rows(tmp_path):
  with M.MetricsLog(tmp_path, tensorboard=False) as log:
    log.write(0, {"loss": np.float32(1.5), "acc": 0.25})
    log.write_many(1, {"loss": np.array([1.0, 0.5]), "acc": np.array([0.5, 0.75])})
    log.write(3, {"mse": 0.125}, prefix="eval")
    assert log.tensorboard_status == "disabled"
  assert _lines(tmp_path) == [
      {"step": 0, "split": "train", "loss": 1.5, "acc": 0.25},
      {"step": 1, "split": "train", "loss": 1.0, "acc": 0.5},
      {"step": 2, "split": "train", "loss": 0.5, "acc": 0.75},
      {"step": 3, "split": "eval", "mse": 0.125}]
  assert [r["step"] for r in M.read_metrics(tmp_path, "train")] == [0, 1, 2]


def test_instance_is_the_on_metrics_callback(tmp_path):
  with M.MetricsLog(tmp_path, tensorboard=False) as log:
    log(10, {"loss": np.arange(3.0)})
  assert [(r["step"], r["loss"]) for r in _lines(tmp_path)] == [
      (10, 0.0), (11, 1.0), (12, 2.0)]


def test_non_finite_values_are_null(tmp_path):
  with M.MetricsLog(tmp_path, tensorboard=False) as log:
    log.write_many(0, {"loss": np.array([np.nan, np.inf, -np.inf, 1.0])})
  text = (tmp_path / "metrics.jsonl").read_text()
  assert "NaN" not in text and "Infinity" not in text
  assert [r["loss"] for r in _lines(tmp_path)] == [None, None, None, 1.0]


def test_unequal_lengths_and_bad_shapes_are_refused(tmp_path):
  with M.MetricsLog(tmp_path, tensorboard=False) as log:
    with pytest.raises(ValueError, match="differ in length"):
      log.write_many(0, {"a": np.zeros(2), "b": np.zeros(3)})
    with pytest.raises(ValueError, match="one value per step"):
      log.write_many(0, {"a": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="clashes"):
      log.write(0, {"step": 1.0})
  assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_append_on_reopen_and_truncate_after(tmp_path):
  with M.MetricsLog(tmp_path, tensorboard=False) as log:
    log.write_many(0, {"loss": np.arange(6.0)})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 6, "split": "tr')  # torn by a crash
  with M.MetricsLog(tmp_path, tensorboard=False) as log:
    log.truncate_after(4)
    log.write_many(4, {"loss": np.array([40.0, 50.0])})
  rows = _lines(tmp_path)
  assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5]
  assert [r["loss"] for r in rows] == [0.0, 1.0, 2.0, 3.0, 40.0, 50.0]


def test_tensorboard_events_read_back(tmp_path):
  with M.MetricsLog(tmp_path) as log:
    assert log.tensorboard_status in ("tensorboardX", "torch"), log.tensorboard_status
    log.write_many(0, {"loss": np.array([3.0, 2.0, 1.0])})
    log.write(2, {"mse": 0.5}, prefix="eval")
  scalars = _tb_scalars(tmp_path / "tensorboard")
  assert scalars["train/loss"] == [(0, 3.0), (1, 2.0), (2, 1.0)]
  assert scalars["eval/mse"] == [(2, 0.5)]


def test_truncate_after_purges_tensorboard_from_that_step(tmp_path):
  with M.MetricsLog(tmp_path) as log:
    log.write_many(0, {"loss": np.arange(6.0)})
  with M.MetricsLog(tmp_path) as log:
    log.truncate_after(4)
    log.write_many(4, {"loss": np.array([40.0, 50.0])})
  event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
  events = _events(tmp_path / "tensorboard")
  assert len(list((tmp_path / "tensorboard").iterdir())) == 2
  starts = [e.step for e in events if e.HasField("session_log")
            and e.session_log.status == event_pb2.SessionLog.START]
  assert starts == [4]
  # Both files are intact (the old events are purged by TensorBoard's
  # reader, not lost from disk).
  assert [(e.step, e.summary.value[0].simple_value) for e in events
          if e.summary.value] == [(i, float(i)) for i in range(6)] + [
              (4, 40.0), (5, 50.0)]


def test_truncate_after_one_split_keeps_the_others(tmp_path):
  with M.MetricsLog(tmp_path) as log:
    log.write_many(0, {"loss": np.arange(4.0)}, prefix="a/train")
    log.write_many(0, {"loss": 10 + np.arange(4.0)}, prefix="b/train")
  with M.MetricsLog(tmp_path) as log:
    log.truncate_after(2, split="b/train")
    log.write_many(2, {"loss": np.array([20.0, 30.0])}, prefix="b/train")
  rows = [(r["split"], r["step"], r["loss"]) for r in M.read_metrics(tmp_path)]
  assert rows == ([("a/train", i, float(i)) for i in range(4)] +
                  [("b/train", 0, 10.0), ("b/train", 1, 11.0),
                   ("b/train", 2, 20.0), ("b/train", 3, 30.0)])


def test_tensorboard_nan_is_kept_as_nan(tmp_path):
  with M.MetricsLog(tmp_path) as log:
    log.write(0, {"loss": float("nan")})
  [(step, value)] = _tb_scalars(tmp_path / "tensorboard")["train/loss"]
  assert step == 0 and math.isnan(value)


def test_no_writer_installed_falls_back_to_jsonl(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)
  monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
  with M.MetricsLog(tmp_path) as log:
    assert log.tensorboard_status.startswith("unavailable: ")
    assert "tensorboardX" in log.tensorboard_status
    log.write(0, {"loss": 1.0})
  assert _lines(tmp_path) == [{"step": 0, "split": "train", "loss": 1.0}]
  assert not (tmp_path / "tensorboard").exists()


def test_closed_log_refuses_writes(tmp_path):
  log = M.MetricsLog(tmp_path, tensorboard=False)
  log.close()
  log.close()
  with pytest.raises(ValueError, match="closed"):
    log.write(0, {"loss": 1.0})
