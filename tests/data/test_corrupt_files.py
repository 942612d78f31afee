"""Every data file type the loaders read, damaged five ways, gets a named error.

Each case builds a small valid file in ``tmp_path``, checks that the loader
reads it, then replaces it with a truncated, bit-flipped, empty, Git LFS
pointer or wrong-format version and expects a ``ValueError`` whose message
names the file: a user with a damaged download must learn *which* file to
fetch again, not read numpy's "allow_pickle" advice or a ``TypeError``.
"""
from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metajax.data import datadir, imagenet, omniglot, splits
from metajax.evaluation import lake

LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e"
               b"2ca24d17e2393\nsize 12345\n")


def png(seed: int, side: int = 12) -> bytes:
  img = np.ones((side, side), bool)
  img[2 + seed % 5: 6 + seed % 5, 1:3 + seed % 7] = False
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format="PNG")
  return buf.getvalue()


def write_zip(path: Path, files: dict) -> Path:
  with zipfile.ZipFile(path, "w") as zf:
    for name, data in files.items():
      zf.writestr(name, data)
  return path


# -- valid files and how to read them ------------------------------------------
# Each maker writes a valid file under ``root`` and returns ``(path, read)``;
# ``read()`` goes through the public loader that reads that file type.
def omniglot_zip(root):
  files = {f"images_background/Zeta/character01/0001_{d:02d}.png": png(d)
           for d in range(1, 21)}
  path = write_zip(root / "images_background.zip", files)
  return path, lambda: omniglot.read_archive(path, size=None)


def omniglot_npz(root):
  path = root / "images_background.npz"
  np.savez(path, images=np.random.default_rng(0).random((2, 20, 9, 9)) > 0.5)
  index = root / "omniglot_index.csv"
  index.write_text("global_id,set,npz_label,alphabet,character\n"
                   "1,background,0,Zeta,character01\n"
                   "2,background,1,Zeta,character02\n")
  return path, lambda: omniglot.read_npz(path, index, "background", size=None)


def omniglot_index(root):
  index = root / "omniglot_index.csv"
  index.write_text("global_id,set,npz_label,alphabet,character\n" + "".join(
      f"{i + 1},background,{i},Zeta,character{i + 1:02d}\n"
      for i in range(6)))
  return index, lambda: omniglot.read_index(index)


def vinyals_split(root):
  folder = root / "splits" / "omniglot_vinyals"
  folder.mkdir(parents=True)
  for n, part in enumerate(splits.VINYALS_PARTS):
    folder.joinpath(f"{part}.txt").write_text("".join(
        f"Alpha{n}/character{c:02d}/{r}\n" for c in range(1, 4)
        for r in splits.ROTATION_SUFFIXES))
  return folder / "train.txt", lambda: splits.read_vinyals_split(root)


def ravi_csv(root):
  path = root / "train.csv"
  path.write_text("filename,label\n" + "".join(
      f"n01532829{i:08d}.jpg,n01532829\n" for i in range(8)))
  return path, lambda: imagenet.read_ravi_csv(path)


def tiered_csv(root):
  path = root / "train.csv"
  path.write_text("".join(f"n0{i:07d},n0{i % 3:07d}\n" for i in range(7)))
  return path, lambda: imagenet.read_tiered_csv(path)


def cifar_json(root):
  folder = root / "splits" / "torchmeta_assets" / "cifar100" / "cifar-fs"
  folder.mkdir(parents=True)
  path = folder / "train.json"
  path.write_text(json.dumps([["fish", "trout"], ["trees", "oak_tree"]]))
  return path, lambda: imagenet.read_cifar_split(root, "cifar_fs", "train")


def mini_pickle(root):
  path = root / "mini-imagenet-cache-train.pkl"
  path.write_bytes(pickle.dumps({
      "image_data": np.zeros((4, 6, 6, 3), np.uint8),
      "class_dict": {"n01": [0, 1], "n02": [2, 3]}}))
  return path, lambda: datadir.load_pickle(path)


def npy_array(root):
  path = root / "images.npy"
  np.save(path, np.arange(600, dtype=np.float32).reshape(20, 30))
  return path, lambda: datadir.load_npy(path)


def lake_runs(root):
  files, lines = {}, []
  for c in range(1, 21):
    files[f"run01/training/class{c:02d}.png"] = png(c)
    files[f"run01/test/item{c:02d}.png"] = png(c)
    lines.append(f"run01/test/item{c:02d}.png run01/training/class{c:02d}.png")
  files["run01/class_labels.txt"] = "\n".join(lines) + "\n"
  path = write_zip(root / "all_runs.zip", files)
  return path, lambda: lake.load_lake_runs(path)


MAKERS = {f.__name__: f for f in (
    omniglot_zip, omniglot_npz, omniglot_index, vinyals_split, ravi_csv,
    tiered_csv, cifar_json, mini_pickle, npy_array, lake_runs)}
BINARY = {"omniglot_zip", "omniglot_npz", "mini_pickle", "npy_array",
          "lake_runs"}


# -- damage --------------------------------------------------------------------
def truncated(data: bytes, kind: str) -> bytes:
  """The first half. The text fixtures are sized so this cuts inside a row:
  a text file cut exactly at a line end is a valid shorter file, caught only
  where a loader cross-checks it against other files."""
  return data[:len(data) // 2]


def bit_flipped(data: bytes, kind: str) -> bytes:
  """16 bytes inverted mid-file (for a pickle: in its opcodes).

  A flip inside an uncompressed array of a pickle or a ``.npy`` would load as
  different numbers: pickles and ``.npy`` files carry no checksum. Zips and
  npz archives do (CRC-32 per member), and the cache adds one per array.
  """
  at = {"mini_pickle": 2, "npy_array": 20}.get(kind, len(data) // 2)
  out = bytearray(data)
  for i in range(at, at + 16):
    out[i] ^= 0xFF
  return bytes(out)


def empty(data: bytes, kind: str) -> bytes:
  return b""


def lfs_pointer(data: bytes, kind: str) -> bytes:
  return LFS_POINTER


def wrong_format(data: bytes, kind: str) -> bytes:
  """Binary files become text, text files become a zip archive."""
  if kind in BINARY:
    return b"global_id,set,npz_label,alphabet,character\n1,a,0,b,c\n"
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w") as zf:
    zf.writestr("a.png", png(1))
  return buf.getvalue()


DAMAGE = {f.__name__: f for f in (truncated, bit_flipped, empty, lfs_pointer,
                                  wrong_format)}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_damaged_file_raises_value_error_naming_it(tmp_path, kind, damage):
  path, read = MAKERS[kind](tmp_path)
  read()  # the undamaged file is valid
  path.write_bytes(DAMAGE[damage](path.read_bytes(), kind))
  with pytest.raises(ValueError) as err:
    read()
  assert path.name in str(err.value), str(err.value)
  if damage == "lfs_pointer":
    assert "git lfs pull" in str(err.value)


def test_npz_that_is_random_bytes_or_lfs_pointer_names_the_file(tmp_path):
  # The probe: numpy alone says "allow_pickle" and not which file.
  path = tmp_path / "images_evaluation.npz"
  path.write_bytes(np.random.default_rng(1).bytes(4096))
  with pytest.raises(ValueError, match="images_evaluation.npz is not an .npz"):
    datadir.load_npz(path, ["images"])
  path.write_bytes(LFS_POINTER)
  with pytest.raises(ValueError, match="images_evaluation.npz is a Git LFS "
                     "pointer, not the data: run `git lfs pull`"):
    datadir.load_npz(path, ["images"])


def test_npz_of_the_wrong_kind(tmp_path):
  single = tmp_path / "single.npz"
  with open(single, "wb") as f:
    np.save(f, np.zeros(3))
  with pytest.raises(ValueError, match="single.npz holds a single array"):
    datadir.load_npz(single, ["images"])
  objects = tmp_path / "objects.npz"
  np.savez(objects, images=np.array([{"a": 1}], dtype=object))
  with pytest.raises(ValueError, match="objects.npz is not an .npz"):
    datadir.load_npz(objects, ["images"])


def test_truncated_index_names_file_and_line(tmp_path):
  path, _ = omniglot_index(tmp_path)
  text = path.read_text()
  path.write_text(text[:text.rindex(",background")])  # cut inside the last row
  with pytest.raises(ValueError, match=r"omniglot_index.csv:7: expected the 5 "
                     "fields"):
    omniglot.read_index(path)


def test_damaged_cache_entry_is_rebuilt_with_a_warning(tmp_path):
  built = []

  def build():
    built.append(1)
    return {"x": np.arange(1000, dtype=np.float32)}, {"n": 1}

  first, _ = datadir.cached(tmp_path, True, "entry", build)
  npy = tmp_path / "entry" / "x.npy"
  for damage in (truncated, bit_flipped, empty, lfs_pointer, wrong_format):
    npy.write_bytes(damage(npy.read_bytes(), "cache"))
    with pytest.warns(RuntimeWarning, match="damaged cache entry .*x.npy"):
      again, meta = datadir.cached(tmp_path, True, "entry", build)
    np.testing.assert_array_equal(again["x"], first["x"])
    assert meta == {"n": 1}
  assert len(built) == 6  # the first build and one rebuild per damage
  datadir.cached(tmp_path, True, "entry", build)  # a sound entry: a hit
  assert len(built) == 6
