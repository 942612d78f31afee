"""Named Omniglot splits: MAML (seeded), Vinyals (files), Lake (sets)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from metajax.data import omniglot, splits


def fake_omniglot(names_sets_ids) -> omniglot.OmniglotData:
  """Metadata-only Omniglot (1x1 images) for split logic."""
  n = len(names_sets_ids)
  alph = [a for (a, _), _, _ in names_sets_ids]
  char = [c for (_, c), _, _ in names_sets_ids]
  return omniglot.OmniglotData(
      images=np.zeros((n, 1, 1, 1, 1), np.float32), alphabet=np.array(alph),
      character=np.array(char),
      set_name=np.array([s for _, s, _ in names_sets_ids]),
      char_id=np.array([i for _, _, i in names_sets_ids], np.int32))


@pytest.fixture(scope="module")
def index_data(shared_data_dir):
  """All 1623 characters' metadata from the shared omniglot_index.csv."""
  rows = omniglot.read_index(
      shared_data_dir / "omniglot" / "omniglot_index.csv")
  items = [((a, c), s, g) for s in ("background", "evaluation")
           for g, _, a, c in rows[s]]
  return fake_omniglot(items)


def synthetic(n=1623, background=964):
  return fake_omniglot([((f"A{i // 20}", f"character{i % 20 + 1:02d}"),
                         "background" if i < background else "evaluation",
                         i + 1) for i in range(n)])


def test_maml_split_sizes_disjoint_seeded():
  data = synthetic()
  idx = splits.split_indices(data, "maml", seed=1)
  assert [len(idx[k]) for k in ("train", "val", "test", "trainval")] == [
      1100, 100, 423, 1200]
  allidx = np.concatenate([idx["train"], idx["val"], idx["test"]])
  assert sorted(allidx.tolist()) == list(range(1623))
  np.testing.assert_array_equal(idx["trainval"],
                                np.concatenate([idx["train"], idx["val"]]))
  again = splits.split_indices(data, "maml", seed=1)
  np.testing.assert_array_equal(again["test"], idx["test"])
  other = splits.split_indices(data, "maml", seed=2)
  assert set(other["test"].tolist()) != set(idx["test"].tolist())
  # the shuffle is over characters ordered by Omniglot id, so it does not
  # depend on the order the data was loaded in
  perm = np.random.default_rng(5).permutation(1623)
  shuffled = data.subset(perm)
  sidx = splits.split_indices(shuffled, "maml", seed=1)
  np.testing.assert_array_equal(shuffled.char_id[sidx["test"]],
                                data.char_id[idx["test"]])
  # it is the documented seeded numpy permutation
  want = np.random.default_rng(1).permutation(1623)[1200:] + 1
  np.testing.assert_array_equal(data.char_id[idx["test"]], want)
  s = splits.split_omniglot(data, "maml", num_train=1000, num_val=200)
  assert (len(s.train), len(s.val), len(s.test)) == (1000, 200, 423)


def test_lake_split():
  data = synthetic()
  s = splits.split_omniglot(data, "lake")
  assert (len(s.train), s.val, len(s.test)) == (964, None, 659)
  assert set(s.train.set_name.tolist()) == {"background"}
  assert set(s.test.set_name.tolist()) == {"evaluation"}
  with pytest.raises(ValueError, match="evaluation set"):
    splits.split_omniglot(data.subset(np.arange(964)), "lake")


def test_bad_split_options():
  data = synthetic(n=50, background=30)
  with pytest.raises(ValueError, match="unknown Omniglot split"):
    splits.split_omniglot(data, "random")
  with pytest.raises(ValueError, match="num_train \\+ num_val < 50"):
    splits.split_omniglot(data, "maml")


def test_vinyals_split_real_files(index_data, shared_data_dir):
  s = splits.split_indices(index_data, "vinyals", data_dir=shared_data_dir)
  assert [len(s[k]) for k in ("train", "val", "test", "trainval")] == [
      1028, 172, 423, 1200]
  parts = [set(s[k].tolist()) for k in ("train", "val", "test")]
  assert sum(map(len, parts)) == len(set().union(*parts)) == 1623
  # split by alphabet, except Gurmukhi: characters 01-41 train, 42-45 test
  alph = [set(index_data.alphabet[list(p)].tolist()) for p in parts]
  assert alph[0] & alph[2] == {"Gurmukhi"}
  assert not (alph[0] & alph[1] or alph[1] & alph[2])
  # the same split as torchmeta's copy
  tm = shared_data_dir / "splits" / "torchmeta_assets" / "omniglot"
  for part in ("train", "val", "test"):
    doc = json.loads((tm / f"{part}.json").read_text())
    names = {f"{a}/{c}" for sets in doc.values() for a, cs in sets.items()
             for c in cs}
    assert names == set(index_data.names[s[part]].tolist())


def test_real_split_counts(real_omniglot, shared_data_dir):
  for name, sizes in (("maml", (1100, 100, 423)),
                      ("vinyals", (1028, 172, 423)), ("lake", (964, 0, 659))):
    s = splits.split_omniglot(real_omniglot, name, data_dir=shared_data_dir)
    got = (len(s.train), 0 if s.val is None else len(s.val), len(s.test))
    assert got == sizes, name
    assert s.train.images.shape[1:] == (20, 28, 28, 1)


def write_split(root, lines_by_part):
  d = root / "splits" / "omniglot_vinyals"
  d.mkdir(parents=True)
  for part in splits.VINYALS_PARTS:
    (d / f"{part}.txt").write_text("\n".join(lines_by_part.get(part, [])) +
                                   "\n")
  return root


def rot_lines(name):
  return [f"{name}/{r}" for r in splits.ROTATION_SUFFIXES]


def test_vinyals_split_files_checked(tmp_path):
  data = synthetic(n=40, background=20)
  ok = {"train": rot_lines("A0/character01") + rot_lines("A0/character02"),
        "val": rot_lines("A1/character01"), "test": rot_lines("A1/character03"),
        "trainval": rot_lines("A0/character01")}
  root = write_split(tmp_path / "ok", ok)
  s = splits.split_omniglot(data, "vinyals", data_dir=root)
  assert s.train.names.tolist() == ["A0/character01", "A0/character02"]
  assert s.test.names.tolist() == ["A1/character03"]
  partial = dict(ok, val=rot_lines("A1/character01")[:3])
  with pytest.raises(ValueError, match="all four rotations"):
    splits.read_vinyals_split(write_split(tmp_path / "partial", partial))
  bad = dict(ok, test=["A1/character03/rot045"])
  with pytest.raises(ValueError, match="rotDDD"):
    splits.read_vinyals_split(write_split(tmp_path / "bad", bad))
  missing = dict(ok, test=rot_lines("Nope/character01"))
  with pytest.raises(ValueError, match="not in this Omniglot data"):
    splits.split_omniglot(data, "vinyals",
                          data_dir=write_split(tmp_path / "miss", missing))
  (tmp_path / "none").mkdir()
  with pytest.raises(FileNotFoundError, match="omniglot_vinyals"):
    splits.split_omniglot(data, "vinyals", data_dir=tmp_path / "none")
