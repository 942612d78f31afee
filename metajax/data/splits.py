"""Named Omniglot class splits (which characters train, validate, test).

* ``'maml'``: MAML / iMAML style. The 1623 characters, ordered by Omniglot
  id, are shuffled with ``numpy.random.default_rng(seed)``; the first 1200
  are meta-training (the first ``num_train = 1100`` train, the next
  ``num_val = 100`` validate) and the remaining 423 test. cbfinn/maml's
  ``data_generator`` does the same with ``random.seed(1)`` over
  ``os.listdir`` order, so this is *a* seeded shuffle of the same sizes, not
  bit-identical to theirs (their order depends on the file system anyway).
* ``'vinyals'``: Vinyals et al. (2016) as released with ProtoNets (Snell et
  al. 2017): 1028 train / 172 val / 423 test characters, by alphabet (except
  Gurmukhi: its characters 01-41 train and 42-45 test), read
  from ``<data_dir>/splits/omniglot_vinyals/{train,val,test}.txt``. The files
  list every character with its four rotations (``rot000`` ... ``rot270``);
  the split is by character and the rotations are the sampler's business.
* ``'lake'``: Lake et al. (2015): the 964 background characters train, the
  659 evaluation characters test; no validation set.

Rotation policy is separate (:data:`metajax.data.sampler.ROTATIONS`):
ProtoNets and torchmeta use the Vinyals split with rotations as new classes
(``'classes'``: 4 x 1028 training classes); MAML and learn2learn rotate each
class of a task by a random multiple of 90 degrees (``'per_task'``).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from metajax.data import datadir as dd
from metajax.data.omniglot import OmniglotData

SPLITS = ("maml", "vinyals", "lake")
VINYALS_PARTS = ("train", "val", "test", "trainval")
ROTATION_SUFFIXES = ("rot000", "rot090", "rot180", "rot270")


class OmniglotSplit(NamedTuple):
  """Train / validation / test classes (``val`` is ``None`` for Lake's split)."""
  train: OmniglotData
  val: OmniglotData | None
  test: OmniglotData


def read_vinyals_split(data_dir=None) -> dict[str, list[str]]:
  """Character names per part of the Vinyals split.

  Returns ``{'train': [...], 'val': [...], 'test': [...], 'trainval': [...]}``
  of ``'Alphabet/characterNN'`` in file order.

  Raises:
    FileNotFoundError: the split files are missing.
    ValueError: a file is empty or binary, a line is malformed or a
      character does not list all four rotations (the message names the
      file).
  """
  out = {}
  for part in VINYALS_PARTS:
    path = dd.split_file(data_dir, "omniglot_vinyals", f"{part}.txt")
    rots: dict[str, set[str]] = {}
    text = dd.read_text(path, "lines 'Alphabet/characterNN/rotDDD'")
    for n, line in enumerate(text.splitlines(), 1):
      line = line.strip()
      if not line:
        continue
      bits = line.split("/")
      if len(bits) != 3 or bits[2] not in ROTATION_SUFFIXES:
        raise ValueError(
            f"{path}:{n}: expected 'Alphabet/characterNN/rotDDD', got {line!r}")
      rots.setdefault(f"{bits[0]}/{bits[1]}", set()).add(bits[2])
    if not rots:
      raise ValueError(f"{path} lists no characters; expected lines "
                       "'Alphabet/characterNN/rotDDD'")
    partial = [c for c, r in rots.items() if len(r) != 4]
    if partial:
      raise ValueError(
          f"{path}: {len(partial)} character(s) do not list all four rotations"
          f" (e.g. {partial[0]}); this loader splits by character")
    out[part] = list(rots)
  return out


def split_indices(data: OmniglotData, name: str = "maml", *, seed: int = 1,
                  num_train: int = 1100, num_val: int = 100,
                  data_dir=None) -> dict[str, np.ndarray]:
  """Row indices of ``data`` per part: ``{'train', 'val', 'test'}`` (+ ``'trainval'``).

  Args:
    data: Omniglot classes (all 1623 for the standard splits).
    name: one of :data:`SPLITS`.
    seed: the ``'maml'`` shuffle's seed.
    num_train, num_val: ``'maml'`` sizes; the rest of the classes test.
    data_dir: where ``splits/omniglot_vinyals/`` lives (``'vinyals'``).

  Raises:
    ValueError: unknown split, too few classes, or characters missing.
  """
  if name not in SPLITS:
    raise ValueError(f"unknown Omniglot split {name!r}; choose from {SPLITS}")
  n = len(data)
  if name == "maml":
    if num_train < 1 or num_val < 0 or num_train + num_val >= n:
      raise ValueError(
          f"the 'maml' split needs num_train + num_val < {n} classes and "
          f"num_train >= 1, got num_train={num_train}, num_val={num_val}")
    canonical = np.argsort(data.char_id, kind="stable")
    perm = canonical[np.random.default_rng(seed).permutation(n)]
    k = num_train + num_val
    return {"train": perm[:num_train], "val": perm[num_train:k],
            "test": perm[k:], "trainval": perm[:k]}
  if name == "vinyals":
    names = read_vinyals_split(data_dir)
    return {part: data.index_of(names[part]) for part in VINYALS_PARTS}
  sets = data.set_name.astype(str)
  train = np.flatnonzero(sets == "background")
  test = np.flatnonzero(sets == "evaluation")
  if not len(train) or not len(test):
    raise ValueError(
        "Lake's split needs both the background and the evaluation set; "
        f"loaded sets: {sorted(set(sets.tolist()))}")
  return {"train": train, "val": np.zeros((0,), np.int64), "test": test,
          "trainval": train}


def split_omniglot(data: OmniglotData, name: str = "maml", *, seed: int = 1,
                   num_train: int = 1100, num_val: int = 100,
                   data_dir=None) -> OmniglotSplit:
  """:func:`split_indices` applied: an :class:`OmniglotSplit` of data subsets."""
  idx = split_indices(data, name, seed=seed, num_train=num_train,
                      num_val=num_val, data_dir=data_dir)
  val = data.subset(idx["val"]) if len(idx["val"]) else None
  return OmniglotSplit(data.subset(idx["train"]), val, data.subset(idx["test"]))
