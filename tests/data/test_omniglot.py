"""Omniglot loaders (original zip/folder, npz, TFDS), caching, data dir, errors."""
from __future__ import annotations

import argparse
import io
import time
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from metajax.data import datadir, omniglot

SIDE = 105


def page(cid: int, drawer: int) -> np.ndarray:
  """A 105x105 page (True = paper) unique to (character id, drawer)."""
  img = np.ones((SIDE, SIDE), bool)
  img[4 + cid: 30 + 2 * cid, 10:12 + 4 * drawer] = False  # ink
  img[60:62, 3 * cid: 3 * cid + 5] = False
  return img


# (alphabet, character folder, Omniglot id); ids deliberately not in
# alphabetical order, as in the real data.
BACKGROUND = [("Zeta", "character01", 1), ("Zeta", "character02", 2),
              ("Alpha", "character01", 3)]
EVALUATION = [("Omega", "character01", 4), ("Omega", "character02", 5)]


def write_set(root, name, chars, *, as_zip, drawers=range(1, 21), top=True):
  """Writes ``images_<name>`` in Lake's layout; returns its path."""
  files = {}
  for alphabet, character, cid in chars:
    for d in drawers:
      buf = io.BytesIO()
      Image.fromarray(page(cid, d)).save(buf, format="PNG")
      files[f"{alphabet}/{character}/{cid:04d}_{d:02d}.png"] = buf.getvalue()
  root.mkdir(parents=True, exist_ok=True)
  prefix = f"images_{name}/" if top else ""
  if as_zip:
    path = root / f"images_{name}.zip"
    with zipfile.ZipFile(path, "w") as zf:
      for rel, data in files.items():
        zf.writestr(prefix + rel, data)
    return path
  path = root / f"images_{name}"
  for rel, data in files.items():
    f = path / rel
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(data)
  return path


def expected(chars, size=28):
  ink = np.stack([np.stack([(~page(cid, d)).astype(np.float32)
                            for d in range(1, 21)]) for _, _, cid in chars])
  out = jax.image.resize(jnp.asarray(ink), ink.shape[:2] + (size, size),
                         "linear", antialias=True)
  return np.clip(np.asarray(out), 0, 1)[..., None]


@pytest.fixture
def data_dir(tmp_path):
  root = tmp_path / "data"
  (root / "omniglot").mkdir(parents=True)
  return root


def test_resize_matches_jax_image_resize():
  x = np.random.default_rng(0).random((3, 105, 105), np.float32)
  for method in ("linear", "lanczos3"):
    want = jax.image.resize(jnp.asarray(x), (3, 28, 20), method,
                            antialias=True)
    np.testing.assert_allclose(omniglot.resize(x, (28, 20), method=method),
                               want, atol=2e-5)
  np.testing.assert_array_equal(omniglot.resize(x, None), x)


@pytest.mark.parametrize("as_zip", [True, False])
def test_read_archive_shapes_labels_metadata(tmp_path, as_zip):
  path = write_set(tmp_path, "background", BACKGROUND, as_zip=as_zip)
  d = omniglot.read_archive(path, size=28)
  assert d.images.shape == (3, 20, 28, 28, 1)
  assert d.images.dtype == np.float32
  # classes ordered by Omniglot id; drawer j is file _{j+1:02d}
  np.testing.assert_array_equal(d.char_id, [1, 2, 3])
  assert d.alphabet.tolist() == ["Zeta", "Zeta", "Alpha"]
  assert d.character.tolist() == ["character01", "character02", "character01"]
  assert set(d.set_name.tolist()) == {"background"}
  assert d.names.tolist() == ["Zeta/character01", "Zeta/character02",
                              "Alpha/character01"]
  np.testing.assert_allclose(d.images, expected(BACKGROUND), atol=2e-5)
  # ink is 1: full-ink pixels at the original size
  full = omniglot.read_archive(path, size=None)
  assert full.images.shape == (3, 20, 105, 105, 1)
  np.testing.assert_array_equal(full.images[0, 4, ..., 0],
                                (~page(1, 5)).astype(np.float32))


def test_zip_and_folder_agree_and_small_set_name(tmp_path):
  z = write_set(tmp_path / "z", "background_small1", BACKGROUND[:2],
                as_zip=True)
  f = write_set(tmp_path, "background_small1", BACKGROUND[:2], as_zip=False)
  a = omniglot.read_archive(z, size=14)
  b = omniglot.read_archive(f, size=14)
  np.testing.assert_array_equal(a.images, b.images)
  assert set(a.set_name.tolist()) == {"background_small1"}
  # a folder unzipped without its top directory works too
  g = write_set(tmp_path / "flat", "x", BACKGROUND[:2], as_zip=False,
                top=False)
  np.testing.assert_array_equal(
      omniglot.read_archive(g, size=14, set_name="background").images, a.images)


def test_load_omniglot_original_concat_and_cache(data_dir, tmp_path):
  root = data_dir / "omniglot"
  write_set(root, "background", BACKGROUND, as_zip=True)
  write_set(root, "evaluation", EVALUATION, as_zip=False)
  cache = tmp_path / "cache"
  d = omniglot.load_omniglot(data_dir, source="original", cache_dir=cache)
  assert d.images.shape == (5, 20, 28, 28, 1)
  np.testing.assert_array_equal(d.char_id, [1, 2, 3, 4, 5])
  assert d.set_name.tolist() == ["background"] * 3 + ["evaluation"] * 2
  np.testing.assert_allclose(d.images, expected(BACKGROUND + EVALUATION),
                             atol=2e-5)
  entries = [p for p in cache.iterdir() if not p.name.startswith(".")]
  assert len(entries) == 1 and (entries[0] / "images.npy").is_file()
  t = time.perf_counter()
  warm = omniglot.load_omniglot(data_dir, cache_dir=cache)  # auto -> original
  assert time.perf_counter() - t < 1.0
  np.testing.assert_array_equal(warm.images, d.images)
  assert warm.alphabet.tolist() == d.alphabet.tolist()
  # a different size is a different cache entry
  assert omniglot.load_omniglot(data_dir, size=7, cache_dir=cache
                                ).images.shape == (5, 20, 7, 7, 1)
  # replacing a source file invalidates its entry
  (root / "images_background.zip").unlink()
  write_set(root, "background", BACKGROUND[:2], as_zip=True)
  assert len(omniglot.load_omniglot(data_dir, cache_dir=cache)) == 4
  # sets may be chosen; env var resolves the data dir
  only = omniglot.load_omniglot(data_dir, sets="evaluation", use_cache=False)
  assert only.char_id.tolist() == [4, 5]


def test_data_dir_from_env_and_flag(data_dir, monkeypatch):
  monkeypatch.setenv(datadir.DATA_DIR_ENV, str(data_dir))
  assert datadir.resolve_data_dir() == data_dir
  assert datadir.resolve_data_dir(str(data_dir / "omniglot")) == (
      data_dir / "omniglot")
  parser = datadir.add_data_dir_flag(argparse.ArgumentParser())
  args = parser.parse_args(["--data-dir", str(data_dir), "--cache-dir", "c"])
  assert datadir.resolve_data_dir(args.data_dir) == data_dir
  assert datadir.resolve_cache_dir(args.cache_dir).name == "c"
  assert parser.parse_args([]).data_dir is None
  monkeypatch.setenv(datadir.CACHE_DIR_ENV, str(data_dir / "cc"))
  assert datadir.resolve_cache_dir() == data_dir / "cc"
  monkeypatch.delenv(datadir.CACHE_DIR_ENV)
  assert str(datadir.resolve_cache_dir()).endswith(".cache/metajax")


def test_missing_data_dir_errors(tmp_path, monkeypatch):
  monkeypatch.delenv(datadir.DATA_DIR_ENV, raising=False)
  with pytest.raises(FileNotFoundError, match="METAJAX_DATA_DIR"):
    omniglot.load_omniglot()
  with pytest.raises(FileNotFoundError, match="does not exist") as e:
    omniglot.load_omniglot(tmp_path / "nope")
  assert "images_background.zip" in str(e.value)
  assert "github.com/brendenlake/omniglot" in str(e.value)
  (tmp_path / "empty" / "omniglot").mkdir(parents=True)
  with pytest.raises(FileNotFoundError) as e:
    omniglot.load_omniglot(tmp_path / "empty", use_cache=False)
  msg = str(e.value)
  assert "images_evaluation.zip" in msg and "omniglot_index.csv" in msg
  assert str(tmp_path / "empty" / "omniglot") in msg
  with pytest.raises(FileNotFoundError):
    omniglot.load_omniglot_archive(tmp_path / "missing.zip")


def test_corrupt_and_bad_archives(tmp_path, data_dir):
  good = write_set(tmp_path, "background", BACKGROUND, as_zip=True)
  raw = good.read_bytes()
  root = data_dir / "omniglot"
  truncated = root / "images_background.zip"
  truncated.write_bytes(raw[: len(raw) // 2])
  with pytest.raises(ValueError, match="images_background.zip"):
    omniglot.load_omniglot(data_dir, sets="background", use_cache=False)
  garbage = tmp_path / "images_garbage.zip"
  garbage.write_bytes(b"this is not a zip file at all" * 10)
  with pytest.raises(ValueError, match="images_garbage.zip.*corrupt"):
    omniglot.read_archive(garbage)
  # flip bytes inside a member: CRC error on read
  bad = bytearray(raw)
  with zipfile.ZipFile(good) as zf:
    info = zf.infolist()[-1]
  start = info.header_offset + 30 + len(info.filename.encode())
  bad[start + 5: start + 15] = bytes(10)
  crc = tmp_path / "crc" / "images_background.zip"
  crc.parent.mkdir()
  crc.write_bytes(bytes(bad))
  with pytest.raises(ValueError, match="images_background.zip"):
    omniglot.read_archive(crc)
  # a character with 19 drawers
  short = write_set(tmp_path / "s", "background", BACKGROUND[:1], as_zip=True,
                    drawers=range(1, 20))
  with pytest.raises(ValueError, match="Zeta/character01 has 19 images"):
    omniglot.read_archive(short)
  empty = tmp_path / "images_empty.zip"
  with zipfile.ZipFile(empty, "w") as zf:
    zf.writestr("readme.txt", "hi")
  with pytest.raises(ValueError, match="no Omniglot images"):
    omniglot.read_archive(empty)


def test_bad_options(data_dir):
  with pytest.raises(ValueError, match="unknown Omniglot set"):
    omniglot.load_omniglot(data_dir, sets=("background", "test"))
  with pytest.raises(ValueError, match="unknown Omniglot source"):
    omniglot.load_omniglot(data_dir, source="hdf5")
  root = data_dir / "omniglot"
  write_set(root, "background", BACKGROUND, as_zip=True)
  write_set(root, "background_small1", BACKGROUND[:1], as_zip=True)
  with pytest.raises(ValueError, match="appears twice"):
    omniglot.load_omniglot(data_dir, sets=("background", "background_small1"),
                           use_cache=False)


def write_npz(root, chars, set_name, npz_rows):
  """bitsandscraps-style npz + the rows of omniglot_index.csv."""
  images = np.stack([np.stack([page(cid, d) for d in range(1, 21)])
                     for _, _, cid in chars])
  folder = root / "npz_bitsandscraps"
  folder.mkdir(exist_ok=True)
  np.savez_compressed(folder / f"images_{set_name}.npz", images=images,
                      labels=np.repeat(np.arange(len(chars))[:, None], 20, 1))
  for i, (a, c, cid) in enumerate(chars):
    npz_rows.append(f"{cid},{set_name},{i},{a},{c}")


def test_npz_source_matches_original(data_dir, tmp_path):
  root = data_dir / "omniglot"
  rows = ["global_id,set,npz_label,alphabet,character"]
  write_npz(root, BACKGROUND, "background", rows)
  write_npz(root, EVALUATION, "evaluation", rows)
  (root / "omniglot_index.csv").write_text("\n".join(rows) + "\n")
  d = omniglot.load_omniglot(data_dir, cache_dir=tmp_path / "c")  # auto: npz
  assert d.images.shape == (5, 20, 28, 28, 1)
  np.testing.assert_array_equal(d.char_id, [1, 2, 3, 4, 5])
  assert d.alphabet.tolist() == ["Zeta", "Zeta", "Alpha", "Omega", "Omega"]
  assert d.set_name.tolist() == ["background"] * 3 + ["evaluation"] * 2
  np.testing.assert_allclose(d.images, expected(BACKGROUND + EVALUATION),
                             atol=2e-5)
  with pytest.raises(FileNotFoundError, match="original"):
    omniglot.load_omniglot(data_dir, source="original", use_cache=False)
  # index rows that do not fit the file
  (root / "omniglot_index.csv").write_text("\n".join(rows[:3]) + "\n")
  with pytest.raises(ValueError, match="does not belong"):
    omniglot.load_omniglot(data_dir, use_cache=False)
  # a truncated npz
  (root / "omniglot_index.csv").write_text("\n".join(rows) + "\n")
  f = root / "npz_bitsandscraps" / "images_background.npz"
  f.write_bytes(f.read_bytes()[:200])
  with pytest.raises(ValueError, match="images_background.npz"):
    omniglot.load_omniglot(data_dir, use_cache=False)


def test_tfds_source_offline(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  chars = BACKGROUND  # TFDS labels are Omniglot id - 1
  records = []
  for a_idx, (_, character, cid) in enumerate(chars):
    for d in range(1, 21):
      rgb = np.repeat((page(cid, d).astype(np.uint8) * 255)[..., None], 3, -1)
      records.append({"image": rgb, "alphabet": a_idx,
                      "alphabet_char_id": int(character[-2:]) - 1,
                      "label": cid - 1})
  seen = []

  def as_data_source(builder, split, **kw):
    seen.append(split)
    return records

  with tfds.testing.mock_data(as_data_source_fn=as_data_source,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    d = omniglot.load_omniglot(source="tfds", sets="background", size=28)
  assert seen == ["train"]
  assert d.images.shape == (3, 20, 28, 28, 1)
  np.testing.assert_array_equal(d.char_id, [1, 2, 3])
  assert d.character.tolist() == ["character01", "character02", "character01"]
  assert d.alphabet.tolist() == ["alphabet00", "alphabet01", "alphabet02"]
  np.testing.assert_allclose(d.images, expected(chars), atol=2e-5)
  # a class with the wrong number of records
  del records[0]
  with tfds.testing.mock_data(as_data_source_fn=as_data_source,
                              policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(ValueError, match="label 0 has 19 images"):
      omniglot.load_omniglot(source="tfds", sets="background")


def test_tfds_unprepared_is_not_downloaded(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(FileNotFoundError, match="download=True"):
    omniglot.load_omniglot(source="tfds", tfds_data_dir=tmp_path / "tfds",
                           sets="evaluation")
  assert not any((tmp_path / "tfds").rglob("*.array_record*"))


# -- real data (../shared/data) ------------------------------------------------
def test_real_omniglot_full(real_omniglot):
  d = real_omniglot
  assert d.images.shape == (1623, 20, 28, 28, 1)
  assert 0.0 <= d.images.min() and d.images.max() <= 1.0
  np.testing.assert_array_equal(d.char_id, np.arange(1, 1624))
  sets = d.set_name.tolist()
  assert sets.count("background") == 964 and sets.count("evaluation") == 659
  assert len(set(d.alphabet[:964].tolist())) == 30
  assert len(set(d.alphabet[964:].tolist())) == 20
  assert len(set(d.names.tolist())) == 1623
  # ink is the minority of pixels and every image has some
  assert 0.02 < d.images.mean() < 0.2
  assert (d.images.reshape(1623 * 20, -1).max(1) > 0.3).all()


def test_real_small_zip_matches_npz(real_omniglot, shared_data_dir, tmp_path):
  small = omniglot.load_omniglot_archive(
      shared_data_dir / "omniglot" / "images_background_small1.zip",
      cache_dir=tmp_path)
  assert small.images.shape == (136, 20, 28, 28, 1)
  assert set(small.set_name.tolist()) == {"background_small1"}
  rows = real_omniglot.index_of(small.names.tolist())
  np.testing.assert_array_equal(real_omniglot.char_id[rows], small.char_id)
  np.testing.assert_allclose(real_omniglot.images[rows], small.images,
                             atol=1e-6)


def test_real_warm_load_is_fast(shared_data_dir, real_omniglot,
                                omniglot_cache_dir):
  t = time.perf_counter()  # real_omniglot filled this cache
  again = omniglot.load_omniglot(shared_data_dir, source="npz",
                                 cache_dir=omniglot_cache_dir)
  assert time.perf_counter() - t < 1.0
  np.testing.assert_array_equal(again.images, real_omniglot.images)
