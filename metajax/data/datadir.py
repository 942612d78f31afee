"""Where datasets are read from and where decoded arrays are cached.

Data dir: every loader takes ``data_dir``; ``None`` means the
``METAJAX_DATA_DIR`` environment variable. Experiment scripts expose it as a
flag with :func:`add_data_dir_flag` and turn the flag into a path with
:func:`resolve_data_dir` (flag first, then the environment). Nothing is ever
downloaded: a missing data dir or missing files raise ``FileNotFoundError``
saying where files were looked for, which files are needed and where to get
them (see :data:`HOW_TO_GET`). CI and the tests point the data dir at
``../shared/data`` next to the repository.

Layout under the data dir (each loader also accepts the dataset folder
itself)::

  omniglot/        images_background.zip, images_evaluation.zip (or folders),
                   images_background_small{1,2}.zip, npz_bitsandscraps/*.npz,
                   omniglot_index.csv, all_runs.zip
  splits/          omniglot_vinyals/, miniimagenet_ravi/, tieredimagenet/,
                   torchmeta_assets/cifar100/{cifar-fs,fc100}/
  miniimagenet/    images/ (or images.zip) or mini-imagenet-cache-*.pkl
  tieredimagenet/  {split}_images_png.pkl + {split}_labels.pkl, or folders
  cifar100/        cifar-100-python/ (or .tar.gz), or CIFAR_FS_*.pickle /
                   FC100_*.pickle

Cache dir: decoded, resized arrays are written once as ``.npy`` files under
``$METAJAX_CACHE_DIR`` (default ``~/.cache/metajax``), keyed by the source
files' names, sizes and modification times plus the preprocessing options,
so a second load is a plain ``np.load``. Cache files never go into the
repository.

Corrupt input: every data file is read through one of the helpers at the end
of this module (:func:`open_zip`, :func:`load_npz`, :func:`load_npy`,
:func:`load_pickle`, :func:`read_text`), so an empty, truncated, damaged or
foreign file, or a Git LFS pointer checked out in place of the data, raises
``ValueError`` naming the file and what it should have been, never a bare
numpy/zipfile/csv error. A damaged cache entry is not an error: it is
rebuilt from the source files with a warning naming it (each cached array
carries a CRC-32, so flipped bits are noticed too).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

DATA_DIR_ENV = "METAJAX_DATA_DIR"
CACHE_DIR_ENV = "METAJAX_CACHE_DIR"
DEFAULT_CACHE_DIR = Path("~/.cache/metajax")
#: bump to invalidate every cache entry when the preprocessing changes.
CACHE_VERSION = 1

#: per dataset: the files a loader needs and where they come from.
HOW_TO_GET = {
    "omniglot": (
        "Omniglot (Lake et al. 2015). Put under <data_dir>/omniglot/ any of:\n"
        "  (a) images_background.zip and images_evaluation.zip (zipped or "
        "unzipped), and/or images_background_small1.zip / _small2.zip, from\n"
        "      https://github.com/brendenlake/omniglot/tree/master/python ;\n"
        "  (b) npz_bitsandscraps/images_background.npz and "
        "images_evaluation.npz from https://github.com/bitsandscraps/omniglot "
        "plus omniglot_index.csv (row -> alphabet/character; shipped in "
        "../shared/data/omniglot/);\n"
        "  (c) a prepared TensorFlow Datasets 'omniglot' builder (source='tfds',"
        " tfds_data_dir=...; download=True lets tfds fetch it)."),
    "omniglot_runs": (
        "Lake's 20-way one-shot runs: all_runs.zip (or its unzipped folder "
        "with run01..run20) from https://github.com/brendenlake/omniglot/tree/"
        "master/python/one-shot-classification , under <data_dir>/omniglot/."),
    "splits": (
        "Split files live under <data_dir>/splits/: omniglot_vinyals/*.txt and "
        "miniimagenet_ravi/*.csv from github.com/jakesnell/prototypical-networks"
        " (data/*/splits/), tieredimagenet/*.csv from "
        "github.com/renmengye/few-shot-ssl-public (fewshot/data/), "
        "torchmeta_assets/cifar100/{cifar-fs,fc100}/*.json from "
        "github.com/tristandeleu/pytorch-meta (torchmeta/datasets/assets/)."),
    "miniimagenet": (
        "mini-ImageNet (Vinyals et al. 2016, Ravi & Larochelle 2017 split). Put"
        " under <data_dir>/miniimagenet/ either images/ (or images.zip) with "
        "the files named in splits/miniimagenet_ravi/{train,val,test}.csv "
        "(e.g. n0153282900000005.jpg; made from ILSVRC-12 with the Ravi tools, "
        "github.com/twitter/meta-learning-lstm), or the pickles "
        "mini-imagenet-cache-{train,val,test}.pkl (image_data + class_dict, as "
        "used by learn2learn), or MetaOptNet's "
        "miniImageNet_category_split_{train_phase_train,val,test}.pickle."),
    "tieredimagenet": (
        "tieredImageNet (Ren et al. 2018). Put under <data_dir>/tieredimagenet/"
        " either {train,val,test}_images_png.pkl (or _images.npz) plus "
        "{split}_labels.pkl from github.com/renmengye/few-shot-ssl-public, or "
        "one folder per class: {split}/<wnid>/*.JPEG (tiered-imagenet-tools) or"
        " an ILSVRC-12 train/<wnid>/ folder, with the classes of "
        "splits/tieredimagenet/{split}.csv."),
    "cifar_fs": (
        "CIFAR-FS (Bertinetto et al. 2019) / FC100 (Oreshkin et al. 2018), both"
        " built from CIFAR-100. Put under <data_dir>/cifar100/ either "
        "cifar-100-python/ (train, test, meta) or cifar-100-python.tar.gz from "
        "https://www.cs.toronto.edu/~kriz/cifar.html , or MetaOptNet's "
        "CIFAR_FS_{train,val,test}.pickle / FC100_{train,val,test}.pickle."),
}


# -- data dir ----------------------------------------------------------------
def add_data_dir_flag(parser: argparse.ArgumentParser, *, cache: bool = True
                      ) -> argparse.ArgumentParser:
  """Adds ``--data-dir`` (and ``--cache-dir``) to an argparse parser.

  Both default to ``None`` so that :func:`resolve_data_dir` /
  :func:`resolve_cache_dir` fall back to ``$METAJAX_DATA_DIR`` /
  ``$METAJAX_CACHE_DIR``.
  """
  parser.add_argument(
      "--data-dir", default=None,
      help=f"dataset root (default: ${DATA_DIR_ENV}); expects omniglot/, "
      "splits/, miniimagenet/, ... below it")
  if cache:
    parser.add_argument(
        "--cache-dir", default=None,
        help=f"where decoded arrays are cached (default: ${CACHE_DIR_ENV} or "
        f"{DEFAULT_CACHE_DIR})")
  return parser


def _how_to_get(dataset: str | None) -> str:
  if dataset is not None:
    return HOW_TO_GET.get(dataset, "")
  return ("Expected layout: omniglot/, splits/, miniimagenet/, tieredimagenet/,"
          " cifar100/ below the data dir; see metajax.data.datadir.HOW_TO_GET "
          "for which files each needs and where to get them.")


def resolve_data_dir(flag_value: str | os.PathLike | None = None, *,
                     dataset: str | None = None) -> Path:
  """The data dir: ``flag_value`` if given, else ``$METAJAX_DATA_DIR``.

  ``dataset`` (a key of :data:`HOW_TO_GET`) picks the how-to-get text of the
  error message.

  Raises:
    FileNotFoundError: if neither is set, or the directory does not exist;
      the message says where data is looked for and how to get it.
  """
  source = "--data-dir / data_dir"
  value = flag_value
  if value is None or str(value) == "":
    value = os.environ.get(DATA_DIR_ENV) or None
    source = f"${DATA_DIR_ENV}"
  if value is None:
    raise FileNotFoundError(
        f"no data dir configured: pass data_dir= (or --data-dir) or set "
        f"${DATA_DIR_ENV} to the folder that holds omniglot/, splits/, ... "
        "(in this repository's CI: ../shared/data). Nothing is downloaded "
        "automatically.\n" + _how_to_get(dataset))
  path = Path(value).expanduser()
  if not path.is_dir():
    raise FileNotFoundError(
        f"data dir {path} (from {source}) does not exist or is not a "
        f"directory. Point --data-dir or ${DATA_DIR_ENV} at the folder that "
        "holds omniglot/, splits/, ... (in CI: ../shared/data).\n"
        + _how_to_get(dataset))
  return path


def dataset_dir(data_dir, name: str, dataset: str | None = None) -> Path:
  """``<data_dir>/<name>`` if it exists, else ``data_dir`` itself.

  Lets users point ``data_dir`` either at the root or at the dataset folder.
  """
  root = resolve_data_dir(data_dir, dataset=dataset or name)
  sub = root / name
  return sub if sub.is_dir() else root


def missing_files_error(dataset: str, searched: Iterable[Path | str],
                        what: str = "") -> FileNotFoundError:
  """A ``FileNotFoundError`` listing the paths tried and how to get the data."""
  tried = "\n".join(f"  {p}" for p in searched)
  head = f"{dataset}: {what or 'data files not found'}. Looked for:\n{tried}\n"
  return FileNotFoundError(head + HOW_TO_GET.get(dataset, ""))


def split_file(data_dir, *parts: str) -> Path:
  """Path of a split file under ``<data_dir>/splits/`` (must exist)."""
  root = resolve_data_dir(data_dir, dataset="splits")
  candidates = [root.joinpath("splits", *parts), root.joinpath(*parts)]
  for c in candidates:
    if c.is_file():
      return c
  raise missing_files_error("splits", candidates, "split file not found")


# -- cache dir -----------------------------------------------------------------
def resolve_cache_dir(value: str | os.PathLike | None = None) -> Path:
  """The cache dir: ``value``, else ``$METAJAX_CACHE_DIR``, else ``~/.cache/metajax``."""
  if value is None or str(value) == "":
    value = os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
  return Path(value).expanduser()


def fingerprint(paths: Sequence[Path], **options) -> str:
  """Short hash of files' names/sizes/mtimes and preprocessing options.

  Cheap (no file contents read), so a warm load stays fast; replacing a file
  changes its size or mtime and therefore the key.
  """
  h = hashlib.sha1()
  h.update(f"v{CACHE_VERSION}".encode())
  for p in paths:
    p = Path(p)
    st = p.stat()
    h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|".encode())
    if p.is_dir():  # a folder: its immediate entries count too
      for child in sorted(p.iterdir()):
        h.update(f"{child.name}|".encode())
  h.update(json.dumps(options, sort_keys=True, default=str).encode())
  return h.hexdigest()[:16]


def cache_load(cache_dir: Path, key: str):
  """``(arrays, meta)`` of a cache entry, or ``None`` if absent or damaged.

  A damaged entry (unreadable ``meta.json``, a truncated or bit-flipped
  ``.npy``) is reported with a warning naming the file and treated as a miss,
  so the caller rebuilds it from the source files: the cache is disposable,
  and an error would only make the user delete it by hand.
  """
  entry = Path(cache_dir) / key
  meta_path = entry / "meta.json"
  if not meta_path.is_file():
    return None
  bad = meta_path
  try:
    meta = json.loads(read_text(meta_path, "a metajax cache index (JSON)"))
    crcs = meta.get("crc32", {})
    arrays = {}
    for name in meta["arrays"]:
      bad = entry / f"{name}.npy"
      a = load_npy(bad, "a cached array")
      if name in crcs and _crc32(a) != crcs[name]:
        raise ValueError(f"{bad}: CRC-32 mismatch (flipped bits)")
      arrays[name] = a
    return arrays, meta["meta"]
  except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
    warnings.warn(f"damaged cache entry {bad} ({e}); rebuilding it",
                  RuntimeWarning, stacklevel=2)
    return None


def _crc32(a: np.ndarray) -> int:
  """CRC-32 of an array's bytes (a few hundred MB/s: cheap next to decoding)."""
  return zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"))


def cache_save(cache_dir: Path, key: str, arrays: dict, meta: dict) -> Path:
  """Writes a cache entry atomically (temp folder, then rename)."""
  cache_dir = Path(cache_dir)
  cache_dir.mkdir(parents=True, exist_ok=True)
  entry = cache_dir / key
  tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_dir))
  try:
    for name, a in arrays.items():
      np.save(tmp / f"{name}.npy", np.ascontiguousarray(a), allow_pickle=False)
    (tmp / "meta.json").write_text(json.dumps(
        {"arrays": sorted(arrays), "meta": meta,
         "crc32": {n: _crc32(a) for n, a in arrays.items()}}, default=str))
    if entry.exists():
      shutil.rmtree(entry, ignore_errors=True)
    os.replace(tmp, entry)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return entry


def cached(cache_dir, use_cache: bool, key: str,
           build: Callable[[], tuple[dict, dict]]):
  """``build()`` once, then ``(arrays, meta)`` from the cache on later calls."""
  if use_cache:
    cdir = resolve_cache_dir(cache_dir)
    hit = cache_load(cdir, key)
    if hit is not None:
      return hit
  arrays, meta = build()
  if use_cache:
    cache_save(cdir, key, arrays, meta)
  return arrays, meta


# -- robust readers ------------------------------------------------------------
#: how every Git LFS pointer file begins (the spec version follows).
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"
_REFETCH = "delete it and fetch the file again"


def check_file(path, what: str) -> Path:
  """``path`` if it is a non-empty file that is not a Git LFS pointer.

  A clone without ``git lfs`` checks out ~130-byte text pointers in place of
  large files; every format reader would then fail with its own confusing
  message (numpy's "allow_pickle", zipfile's "not a zip file"), so this is
  checked first and said plainly. ``what`` names the expected content.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    ValueError: it is empty or an LFS pointer; the message names the file.
  """
  path = Path(path)
  with open(path, "rb") as f:
    head = f.read(len(LFS_POINTER_PREFIX))
  if not head:
    raise ValueError(f"{path} is empty; expected {what}: {_REFETCH}")
  if head == LFS_POINTER_PREFIX:
    raise ValueError(
        f"{path} is a Git LFS pointer, not the data: run `git lfs pull` in the"
        f" repository it came from (or fetch the real file); expected {what}")
  return path


def _unreadable(path: Path, what: str, e: BaseException) -> ValueError:
  return ValueError(f"{path} is not {what} (corrupt, truncated or another "
                    f"format: {type(e).__name__}: {e}); {_REFETCH}")


def read_text(path, what: str = "a UTF-8 text file") -> str:
  """Contents of a small text file (CSV, split list, JSON) as ``str``.

  Binary content (a zip, random bytes, an LFS pointer, an empty file) raises
  ``ValueError`` naming the file instead of a ``UnicodeDecodeError`` or a
  parser error without it. A UTF-8 byte-order mark is dropped.
  """
  path = check_file(path, what)
  data = path.read_bytes()
  try:
    text = data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise ValueError(f"{path} is not a UTF-8 text file (byte {e.start} is "
                     f"{data[e.start:e.start + 1]!r}); expected {what}: "
                     f"{_REFETCH}") from e
  if "\x00" in text:
    raise ValueError(f"{path} holds NUL bytes, so it is binary, not {what}: "
                     f"{_REFETCH}")
  return text


def load_json(path, what: str = "a JSON file"):
  """Parsed JSON of ``path``; a malformed file raises ``ValueError`` naming it."""
  text = read_text(path, what)
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e}); expected {what}") from e


def open_zip(path: Path) -> zipfile.ZipFile:
  """Opens a zip archive; a corrupt or truncated one raises ``ValueError``."""
  path = check_file(path, "a zip archive")
  try:
    return zipfile.ZipFile(path)
  except FileNotFoundError:
    raise
  except (zipfile.BadZipFile, EOFError, OSError, ValueError,
          NotImplementedError) as e:
    raise ValueError(
        f"{path} is not a readable zip archive (corrupt or truncated: {e}); "
        f"{_REFETCH}") from e


def read_zip_member(zf: zipfile.ZipFile, name: str, path: Path) -> bytes:
  """Bytes of one member; CRC errors / truncation raise ``ValueError``."""
  try:
    return zf.read(name)
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
          NotImplementedError, RuntimeError) as e:
    # RuntimeError: a flipped flag bit makes a member look encrypted.
    raise ValueError(
        f"{path}: member {name!r} cannot be read (corrupt or truncated "
        f"archive: {e}); {_REFETCH}") from e


def load_npz(path: Path, keys: Sequence[str]) -> dict:
  """Arrays ``keys`` of an ``.npz``; a damaged or foreign file raises ``ValueError``.

  ``np.load`` reports a file that is not a zip (random bytes, an LFS
  pointer) as a pickle it refuses to load, without naming the file; every
  such failure, at open or when an array is decoded, is turned into an
  error that names the file and the arrays expected.
  """
  what = f"an .npz archive holding array(s) {list(keys)}"
  path = check_file(path, what)
  try:
    f = np.load(path, allow_pickle=False)
  except FileNotFoundError:
    raise
  except Exception as e:  # numpy raises anything from ValueError to EOFError
    raise _unreadable(path, what, e) from e
  if not isinstance(f, np.lib.npyio.NpzFile):
    raise ValueError(f"{path} holds a single array of shape {np.shape(f)}, "
                     f"not {what}")
  with f:
    missing = [k for k in keys if k not in f.files]
    if missing:
      raise ValueError(
          f"{path} lacks array(s) {missing}; it holds {f.files}")
    out = {}
    for k in keys:
      try:
        out[k] = f[k]
      except Exception as e:  # CRC/zlib errors, bad headers, object arrays
        raise _unreadable(path, what, e) from e
  return out


def load_npy(path, what: str = "a .npy array") -> np.ndarray:
  """One ``.npy`` array; a damaged or foreign file raises ``ValueError``."""
  path = check_file(path, what)
  try:
    a = np.load(path, allow_pickle=False)
  except FileNotFoundError:
    raise
  except Exception as e:  # see load_npz
    raise _unreadable(path, what, e) from e
  if not isinstance(a, np.ndarray):
    a.close()
    raise ValueError(f"{path} is an .npz archive, not {what}")
  return a


def load_pickle(path: Path):
  """Unpickles ``path`` (Python 2 pickles too); damage raises ``ValueError``.

  Only open pickles you trust: unpickling can run code.
  """
  path = check_file(path, "a pickle")
  try:
    with open(path, "rb") as f:
      try:
        return pickle.load(f)
      except UnicodeDecodeError:  # Python 2 pickle of numpy arrays
        f.seek(0)
        return pickle.load(f, encoding="latin1")
  except FileNotFoundError:
    raise
  except Exception as e:
    # Damaged bytes can fail in any opcode: UnpicklingError, EOFError,
    # KeyError (bad memo), TypeError, struct.error, MemoryError (a damaged
    # length field), ... all mean "damaged".
    raise ValueError(
        f"{path} is not a readable pickle (corrupt or truncated: "
        f"{type(e).__name__}: {e}); {_REFETCH}") from e


def first_existing(candidates: Iterable[Path]) -> Path | None:
  """The first path in ``candidates`` that exists, else ``None``."""
  for c in candidates:
    if Path(c).exists():
      return Path(c)
  return None
