"""Atomic checkpoints of the meta-training state, in a format that runs no code.

A checkpoint is one ``.npz`` file (``numpy.savez``, read back with
``allow_pickle=False``, so loading a file can never execute code): the leaves
of the :class:`~metajax.MetaState` as ``state/<i>``, the per-step metric
history as ``history/<name>``, and a JSON ``meta`` entry (format version,
number of leaves, metric names, ``extra``). The structure (the pytree
definition) is not stored: it comes from ``like``, a state of this run, and a
file whose leaves do not match it in number, shape or dtype is refused.

Writes go to a temporary file that is flushed, fsynced and renamed over the
old one, so a crash never leaves a half-written checkpoint.
"""
from __future__ import annotations

import json
import os
import pathlib
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from metajax.core.learner import MetaState

CHECKPOINT_NAME = "checkpoint.npz"
FORMAT_VERSION = 1
#: what metajax wrote before FORMAT_VERSION 1 (a pickle: never loaded).
LEGACY_NAME = "checkpoint.pkl"


def save_checkpoint(directory, state: MetaState, history: dict, extra=None):
  """Writes ``state``, ``history`` and JSON-able ``extra`` atomically."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  leaves = [np.asarray(a) for a in
            jax.tree_util.tree_leaves(jax.device_get(state))]
  arrays = {f"state/{i}": a for i, a in enumerate(leaves)}
  arrays.update({f"history/{k}": np.asarray(v) for k, v in history.items()})
  meta = {"format": FORMAT_VERSION, "num_leaves": len(leaves),
          "history": sorted(history), "extra": extra}
  arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  tmp = directory / (CHECKPOINT_NAME + ".tmp")
  with open(tmp, "wb") as f:
    np.savez(f, **arrays)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, directory / CHECKPOINT_NAME)


def load_checkpoint(directory, like: MetaState):
  """``(state, history, extra)`` from ``directory``, or ``None`` if absent.

  ``like`` is a state of the same structure (e.g. a fresh
  :func:`~metajax.init_state`); a checkpoint of another structure is an
  error rather than a silent partial restore.
  """
  path = pathlib.Path(directory) / CHECKPOINT_NAME
  if not path.exists():
    legacy = pathlib.Path(directory) / LEGACY_NAME
    if legacy.exists():
      # Starting over silently would discard the run; unpickling could run
      # code. Say so instead.
      raise ValueError(
          f"{legacy} was written by an older metajax as a pickle, which this "
          "version does not load (unpickling can run arbitrary code); start "
          "the run afresh in another directory, or convert the checkpoint "
          "with the metajax version that wrote it")
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      meta = json.loads(bytes(f["meta"]).decode())
      leaves = [f[f"state/{i}"] for i in range(meta["num_leaves"])]
      history = {k: f[f"history/{k}"] for k in meta["history"]}
  except (OSError, ValueError, KeyError, zipfile.BadZipFile,
          json.JSONDecodeError, EOFError) as e:  # truncated or foreign file
    raise ValueError(f"cannot read checkpoint {path}: {e}") from e
  if meta.get("format") != FORMAT_VERSION:
    raise ValueError(
        f"checkpoint {path} has format {meta.get('format')!r}; this metajax "
        f"reads format {FORMAT_VERSION}")
  like_leaves, treedef = jax.tree_util.tree_flatten(jax.device_get(like))
  if len(leaves) != len(like_leaves) or any(
      np.shape(a) != np.shape(b) or np.asarray(a).dtype != np.asarray(b).dtype
      for a, b in zip(leaves, like_leaves)):
    raise ValueError(
        f"checkpoint {path} holds a state of another structure than this "
        "run's (different model, learner or optimiser?)")
  state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(a) for a in leaves])
  return state, history, meta.get("extra")
