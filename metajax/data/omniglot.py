"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015) as one array.

1623 handwritten characters from 50 alphabets, each drawn once by 20
people ("drawers"): 964 characters / 30 alphabets in the *background* set
and 659 / 20 in the *evaluation* set. Every loader returns an
:class:`OmniglotData` whose ``images`` has shape ``(classes, 20, H, W, 1)``,
float32 with **ink = 1** and background 0, plus per-class metadata
(alphabet, character folder name, background/evaluation set, Omniglot id).

Sources (``load_omniglot(source=...)``):

* ``'original'``: Lake's release, ``images_background.zip`` /
  ``images_evaluation.zip`` or their unzipped folders
  (``Alphabet/characterNN/XXXX_YY.png``, ``XXXX`` the character's Omniglot id
  1..1623, ``YY`` the drawer 01..20), and the ``images_background_small1/2``
  subsets (:func:`load_omniglot_archive` reads any one such zip or folder);
* ``'npz'``: the bitsandscraps arrays ``images_{background,evaluation}.npz``
  (bool ``(C, 20, 105, 105)``, True = paper) with ``omniglot_index.csv``
  mapping rows to alphabet/character;
* ``'tfds'``: the TensorFlow Datasets builder ``omniglot`` (splits
  ``train``/``test``/``small1``/``small2``), read through
  ``builder.as_data_source`` so TensorFlow itself is not needed;
* ``'auto'``: the first of these whose files are present.

Classes are ordered by Omniglot id (background 1..964, then evaluation
965..1623), so every source gives the same row for the same character.

PNGs are decoded by :func:`metajax.data.images.decode_image`, the decoder
all loaders share. Resizing 105 -> ``size`` is ``jax.image.resize``
semantics (separable ``method`` kernel, antialiased when shrinking), computed
as ``A @ X @ B^T`` with the resize matrices ``A``, ``B`` so it runs in numpy
over all 32,460 images in a few seconds (:func:`metajax.data.images.resize`,
re-exported here as :func:`resize`). The result is cached as ``.npy`` (see
:mod:`metajax.data.datadir`), so the second load is a ``np.load``.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from metajax.data import datadir as dd
# ``resize`` and ``resize_matrix`` live with the decoder they serve (Lake's
# runs resize the same way); re-exported so ``omniglot.resize`` keeps working.
from metajax.data.images import (  # noqa: F401  (re-exports)
    decode_image, resize, resize_ink, resize_matrix, to_ink)

SETS = ("background", "evaluation", "background_small1", "background_small2")
SOURCES = ("auto", "original", "npz", "tfds")
NUM_CLASSES = {"background": 964, "evaluation": 659,
               "background_small1": 136, "background_small2": 156}
EXAMPLES = 20
ORIGINAL_SIZE = 105
TFDS_SPLITS = {"background": "train", "evaluation": "test",
               "background_small1": "small1", "background_small2": "small2"}
_PNG = re.compile(r"(?:^|/)([^/]+)/(character\d+)/(\d+)_(\d+)\.png$")


@dataclasses.dataclass(frozen=True)
class OmniglotData:
  """Omniglot characters as one array plus class metadata.

  Attributes:
    images: ``(C, E, H, W, 1)`` float32, ink = 1, background = 0; ``E = 20``
      drawers per character (drawer ``j`` is file ``_{j+1:02d}`` where known).
    alphabet: ``(C,)`` alphabet names (``'Bengali'``).
    character: ``(C,)`` character folder names (``'character07'``).
    set_name: ``(C,)`` ``'background'`` / ``'evaluation'`` (or the small
      subset's name when loaded from one).
    char_id: ``(C,)`` int32 Omniglot character ids 1..1623.
  """
  images: np.ndarray
  alphabet: np.ndarray
  character: np.ndarray
  set_name: np.ndarray
  char_id: np.ndarray

  def __post_init__(self):
    c = self.images.shape[0]
    for f in ("alphabet", "character", "set_name", "char_id"):
      if np.shape(getattr(self, f)) != (c,):
        raise ValueError(
            f"OmniglotData.{f} has shape {np.shape(getattr(self, f))}, expected"
            f" ({c},) for {c} classes")
    if self.images.ndim != 5 or self.images.shape[-1] != 1:
      raise ValueError(
          f"OmniglotData.images must be (classes, examples, H, W, 1), got "
          f"{self.images.shape}")

  def __len__(self) -> int:
    return int(self.images.shape[0])

  @property
  def num_classes(self) -> int:
    return len(self)

  @property
  def names(self) -> np.ndarray:
    """``(C,)`` ``'Alphabet/characterNN'`` (the Vinyals split's keys)."""
    return np.char.add(np.char.add(self.alphabet.astype(str), "/"),
                       self.character.astype(str))

  def subset(self, idx) -> "OmniglotData":
    """The classes ``idx`` (indices or a boolean mask), in that order."""
    idx = np.asarray(idx)
    return OmniglotData(self.images[idx], self.alphabet[idx],
                        self.character[idx], self.set_name[idx],
                        self.char_id[idx])

  def index_of(self, names: Sequence[str]) -> np.ndarray:
    """Row indices of ``'Alphabet/characterNN'`` names (``ValueError`` if absent)."""
    table = {n: i for i, n in enumerate(self.names.tolist())}
    missing = [n for n in names if n not in table]
    if missing:
      raise ValueError(
          f"{len(missing)} character(s) not in this Omniglot data (loaded "
          f"sets: {sorted(set(self.set_name.tolist()))}), e.g. {missing[:3]}")
    return np.array([table[n] for n in names], np.int64)


# -- the original layout -------------------------------------------------------
class _Archive:
  """A zip archive or an unzipped folder in the original Omniglot layout."""

  def __init__(self, path: Path):
    self.path = Path(path)
    if self.path.is_dir():
      self.zip = None
      self.members = sorted(
          p.relative_to(self.path).as_posix()
          for p in self.path.rglob("*.png"))
    elif self.path.is_file():
      self.zip = dd.open_zip(self.path)
      self.members = sorted(n for n in self.zip.namelist()
                            if not n.startswith("__MACOSX"))
    else:
      raise FileNotFoundError(f"{self.path} does not exist")

  def read(self, name: str) -> bytes:
    if self.zip is None:
      return (self.path / name).read_bytes()
    return dd.read_zip_member(self.zip, name, self.path)

  def close(self):
    if self.zip is not None:
      self.zip.close()


def _set_from_path(path: Path) -> str:
  stem = Path(path).name
  stem = stem[:-4] if stem.endswith(".zip") else stem
  return stem[len("images_"):] if stem.startswith("images_") else stem


def read_archive(path, *, size=28, method: str = "linear",
                 set_name: str | None = None,
                 examples: int | None = EXAMPLES) -> OmniglotData:
  """Reads one zip or folder in Lake's layout (no cache; see
  :func:`load_omniglot_archive`).

  Args:
    path: ``images_background.zip``, an unzipped ``images_evaluation/``, a
      ``*_small1.zip``, ... (``Alphabet/characterNN/XXXX_YY.png`` inside).
    size: output side (or ``(h, w)``); ``None`` keeps 105.
    method: ``jax.image.resize`` method (antialiased when shrinking).
    set_name: metadata for the classes; default from the file name
      (``images_background_small1.zip`` -> ``'background_small1'``).
    examples: images required per character (``None``: any, but equal).

  Raises:
    ValueError: corrupt archive, no Omniglot PNGs inside, a character with a
      wrong number of drawers or a repeated drawer.
  """
  path = Path(path)
  set_name = set_name or _set_from_path(path)
  arc = _Archive(path)
  try:
    classes: dict[tuple[str, str], list] = {}
    for m in arc.members:
      hit = _PNG.search(m)
      if hit is None:
        continue
      alphabet, character, cid, drawer = hit.groups()
      classes.setdefault((alphabet, character), []).append(
          (int(drawer), int(cid), m))
    if not classes:
      raise ValueError(
          f"{path} holds no Omniglot images (expected "
          "Alphabet/characterNN/XXXX_YY.png entries)")
    keys = sorted(classes, key=lambda k: (min(c for _, c, _ in classes[k]), k))
    want = examples or len(classes[keys[0]])
    out, ids = [], []
    for key in keys:
      items = sorted(classes[key])
      drawers = [d for d, _, _ in items]
      if len(items) != want or len(set(drawers)) != len(drawers):
        raise ValueError(
            f"{path}: character {key[0]}/{key[1]} has {len(items)} images "
            f"(drawers {drawers}); expected {want} distinct drawers")
      ink = np.stack([to_ink(decode_image(arc.read(m), f"{path}:{m}"))
                      for _, _, m in items])
      out.append(resize_ink(ink, size, method))
      ids.append(items[0][1])
  finally:
    arc.close()
  images = np.stack(out)[..., None]
  return OmniglotData(
      images=images,
      alphabet=np.array([k[0] for k in keys]),
      character=np.array([k[1] for k in keys]),
      set_name=np.array([set_name] * len(keys)),
      char_id=np.array(ids, np.int32))


def concat(parts: Sequence[OmniglotData]) -> OmniglotData:
  """Classes of several :class:`OmniglotData` stacked (ids must not repeat)."""
  if not parts:
    raise ValueError("nothing to concatenate")
  shapes = {p.images.shape[1:] for p in parts}
  if len(shapes) != 1:
    raise ValueError(f"parts differ in (examples, H, W, 1): {sorted(shapes)}")
  data = OmniglotData(*(np.concatenate([getattr(p, f.name) for p in parts])
                        for f in dataclasses.fields(OmniglotData)))
  ids, counts = np.unique(data.char_id, return_counts=True)
  if (counts > 1).any():
    raise ValueError(
        f"the same character appears twice (Omniglot ids {ids[counts > 1][:5]}"
        "); the small1/small2 sets are subsets of the background set, do not "
        "load them together with it")
  return data


# -- locating files ------------------------------------------------------------
def _original_candidates(root: Path, s: str) -> list[Path]:
  return [root / f"images_{s}.zip", root / f"images_{s}"]


def _npz_candidates(root: Path, s: str) -> list[Path]:
  return [root / "npz_bitsandscraps" / f"images_{s}.npz",
          root / f"images_{s}.npz"]


def _index_candidates(root: Path) -> list[Path]:
  return [root / "omniglot_index.csv",
          root / "npz_bitsandscraps" / "omniglot_index.csv"]


def read_index(path) -> dict[str, list[tuple[int, int, str, str]]]:
  """``omniglot_index.csv`` as ``{set: [(global_id, npz_row, alphabet, character)]}``.

  Rows of each set are sorted by ``npz_row``. Every row is checked, so a
  truncated or damaged file raises ``ValueError`` naming the file and line
  rather than a ``TypeError`` from a missing field.
  """
  path = Path(path)
  need = ("global_id", "set", "npz_label", "alphabet", "character")
  what = f"a CSV with columns {','.join(need)}"
  reader = csv.DictReader(io.StringIO(dd.read_text(path, what), newline=""))
  if not set(need) <= set(reader.fieldnames or ()):
    raise ValueError(
        f"{path} must have columns {sorted(need)}, has {reader.fieldnames}")
  out: dict[str, list] = {}
  for r in reader:
    line = reader.line_num
    if any(r.get(k) in (None, "") for k in need) or None in r:
      raise ValueError(
          f"{path}:{line}: expected the {len(need)} fields {','.join(need)}, "
          f"got {list(r.values())} (truncated or "
          f"damaged file?)")
    try:
      ids = int(r["global_id"]), int(r["npz_label"])
    except ValueError as e:
      raise ValueError(f"{path}:{line}: global_id and npz_label must be "
                       f"integers ({e})") from e
    out.setdefault(r["set"], []).append((*ids, r["alphabet"], r["character"]))
  if not out:
    raise ValueError(f"{path} has a header but no rows; expected {what}")
  for rows in out.values():
    rows.sort(key=lambda r: r[1])
  return out


def read_npz(npz_path, index_path, set_name: str, *, size=28,
             method: str = "linear", chunk: int = 64) -> OmniglotData:
  """One set from a bitsandscraps ``.npz`` plus ``omniglot_index.csv``."""
  npz_path = Path(npz_path)
  raw = dd.load_npz(npz_path, ["images"])["images"]
  if raw.ndim != 4:
    raise ValueError(
        f"{npz_path}: images must be (classes, drawers, H, W), got {raw.shape}")
  rows = read_index(index_path).get(set_name, [])
  in_order = [r[1] for r in rows] == list(range(len(rows)))
  if len(rows) != raw.shape[0] or not in_order:
    raise ValueError(
        f"{index_path} lists {len(rows)} '{set_name}' rows but {npz_path} has "
        f"{raw.shape[0]} classes; the index does not belong to this file")
  out = [resize_ink(to_ink(raw[i:i + chunk]), size, method)
         for i in range(0, raw.shape[0], chunk)]
  return OmniglotData(
      images=np.concatenate(out)[..., None],
      alphabet=np.array([r[2] for r in rows]),
      character=np.array([r[3] for r in rows]),
      set_name=np.array([set_name] * len(rows)),
      char_id=np.array([r[0] for r in rows], np.int32))


def _tfds_via_tensorflow(tfds, builder, split):
  """Records of a TFRecord-prepared builder, if TensorFlow is installed."""
  try:
    import tensorflow  # noqa: F401  (only needed for TFRecord files)
    if not builder.is_prepared():
      return None
    return list(tfds.as_numpy(builder.as_dataset(split=split)))
  except Exception:  # no TensorFlow, or unreadable files
    return None


def read_tfds(set_name: str, *, size=28, method: str = "linear",
              tfds_data_dir=None, download: bool = False,
              examples: int | None = EXAMPLES) -> OmniglotData:
  """One set from the TFDS ``omniglot`` builder (no TensorFlow needed).

  Reads ``builder.as_data_source(split)`` (array_record files; a TFRecord
  build is read through ``as_dataset`` when TensorFlow is installed). The drawer
  order within a class is the order of the records (TFDS drops drawer ids).
  ``download=True`` lets TFDS fetch and prepare the data first; otherwise a
  builder that is not prepared raises ``FileNotFoundError``.
  """
  import tensorflow_datasets as tfds  # optional dependency, imported lazily
  split = TFDS_SPLITS[set_name]
  builder = tfds.builder("omniglot", data_dir=tfds_data_dir)
  if download:
    builder.download_and_prepare(file_format="array_record")
  try:
    source = builder.as_data_source(split)
  except Exception as e:  # tfds raises AssertionError/NotImplementedError/...
    source = _tfds_via_tensorflow(tfds, builder, split)
    if source is None:
      raise dd.missing_files_error(
          "omniglot", [Path(str(builder.data_dir))],
          f"TFDS builder 'omniglot' split '{split}' is not readable ({e}); "
          "prepare it with array_record files or pass download=True") from e
  features = builder.info.features
  alphabet_names = list(features["alphabet"].names)
  label_names = list(features["label"].names)
  by_label: dict[int, list] = {}
  alph: dict[int, int] = {}
  charno: dict[int, int] = {}
  for i in range(len(source)):
    ex = source[i]
    lab = int(ex["label"])
    img = np.asarray(ex["image"])
    by_label.setdefault(lab, []).append(img[..., 0] if img.ndim == 3 else img)
    alph[lab] = int(ex["alphabet"])
    charno[lab] = int(ex["alphabet_char_id"])
  if not by_label:
    raise ValueError(f"TFDS omniglot split '{split}' is empty")
  labels = sorted(by_label)
  want = examples or len(by_label[labels[0]])
  out = []
  for lab in labels:
    if len(by_label[lab]) != want:
      raise ValueError(
          f"TFDS omniglot split '{split}': label {lab} has "
          f"{len(by_label[lab])} images, expected {want}")
    out.append(resize_ink(to_ink(np.stack(by_label[lab])), size, method))

  def alphabet(lab):
    # A builder restored from its metadata names labels 'Alphabet_k'; a mocked
    # or metadata-less one just numbers labels and alphabets, and so do we.
    if lab < len(label_names):
      head, _, tail = label_names[lab].rpartition("_")
      if head and tail.isdigit():
        return head
    a = alph[lab]
    name = alphabet_names[a] if a < len(alphabet_names) else str(a)
    return f"alphabet{a:02d}" if name.isdigit() else name

  return OmniglotData(
      images=np.stack(out)[..., None],
      alphabet=np.array([alphabet(l) for l in labels]),
      character=np.array([f"character{charno[l] + 1:02d}" for l in labels]),
      set_name=np.array([set_name] * len(labels)),
      char_id=np.array([l + 1 for l in labels], np.int32))


# -- public loaders ------------------------------------------------------------
def _to_arrays(data: OmniglotData):
  arrays = {f.name: getattr(data, f.name)
            for f in dataclasses.fields(OmniglotData)}
  return arrays, {}


def _from_arrays(arrays) -> OmniglotData:
  return OmniglotData(**{f.name: arrays[f.name]
                         for f in dataclasses.fields(OmniglotData)})


def _check_sets(sets) -> tuple[str, ...]:
  if isinstance(sets, str):
    sets = (sets,)
  sets = tuple(sets)
  bad = [s for s in sets if s not in SETS]
  if bad or not sets:
    raise ValueError(
        f"unknown Omniglot set(s) {bad or sets}; choose from {SETS}")
  return sets


def _size_key(size):
  return None if size is None else (
      [size, size] if np.isscalar(size) else list(size))


def load_omniglot_archive(path, *, size=28, method: str = "linear",
                          set_name: str | None = None, cache_dir=None,
                          use_cache: bool = True) -> OmniglotData:
  """:func:`read_archive` with the ``.npy`` cache (any zip/folder path)."""
  path = Path(path)
  if not path.exists():
    raise dd.missing_files_error("omniglot", [path], "archive not found")
  key = "omniglot-archive-" + dd.fingerprint(
      [path], size=_size_key(size), method=method, set_name=set_name)
  arrays, _ = dd.cached(
      cache_dir, use_cache, key,
      lambda: _to_arrays(read_archive(path, size=size, method=method,
                                      set_name=set_name)))
  return _from_arrays(arrays)


def find_sources(data_dir=None) -> dict[str, dict[str, Path]]:
  """Which Omniglot files exist under the data dir.

  Returns ``{'original': {set: path}, 'npz': {set: path}, 'index': path or
  None, 'root': omniglot folder}``.
  """
  root = dd.dataset_dir(data_dir, "omniglot")
  found = {"original": {}, "npz": {}}
  for s in SETS:
    p = dd.first_existing(_original_candidates(root, s))
    if p is not None:
      found["original"][s] = p
    p = dd.first_existing(_npz_candidates(root, s))
    if p is not None:
      found["npz"][s] = p
  found["index"] = dd.first_existing(_index_candidates(root))
  found["root"] = root
  return found


def load_omniglot(data_dir=None, *, sets=("background", "evaluation"),
                  source: str = "auto", size=28, method: str = "linear",
                  cache_dir=None, use_cache: bool = True, tfds_data_dir=None,
                  download: bool = False) -> OmniglotData:
  """Omniglot as ``(classes, 20, size, size, 1)`` float32 (ink = 1).

  Args:
    data_dir: root holding ``omniglot/`` (or that folder itself); ``None``
      reads ``$METAJAX_DATA_DIR``. Not needed for ``source='tfds'``.
    sets: which of :data:`SETS` to load, concatenated in this order (the
      default gives all 1623 characters, ordered by Omniglot id).
    source: one of :data:`SOURCES`; ``'auto'`` prefers the original files,
      then the npz arrays (TFDS only when asked for).
    size: output side (or ``(h, w)``); ``None`` keeps 105x105.
    method: ``jax.image.resize`` method; antialiased when shrinking.
    cache_dir: where the result is cached (default ``$METAJAX_CACHE_DIR`` or
      ``~/.cache/metajax``); ``use_cache=False`` always rebuilds.
    tfds_data_dir, download: passed to TFDS for ``source='tfds'``.

  Raises:
    FileNotFoundError: no data dir, or none of the needed files; the message
      lists the paths tried and where to get the files.
    ValueError: unknown set/source, corrupt or inconsistent files.
  """
  sets = _check_sets(sets)
  if source not in SOURCES:
    raise ValueError(
        f"unknown Omniglot source {source!r}; choose from {SOURCES}")
  opts = dict(sets=list(sets), size=_size_key(size), method=method)

  if source == "tfds":
    def build_tfds():
      return _to_arrays(concat([
          read_tfds(s, size=size, method=method, tfds_data_dir=tfds_data_dir,
                    download=download) for s in sets]))
    # Cache only a builder with files on disk (never a mocked one).
    tdir = Path(str(tfds_data_dir)) / "omniglot" if tfds_data_dir else None
    can_cache = use_cache and tdir is not None and tdir.is_dir()
    key = "omniglot-tfds-" + dd.fingerprint([tdir], **opts) if can_cache else ""
    arrays, _ = dd.cached(cache_dir, can_cache, key, build_tfds)
    return _from_arrays(arrays)

  found = find_sources(data_dir)
  root = found["root"]
  have_original = all(s in found["original"] for s in sets)
  have_npz = (all(s in found["npz"] for s in sets)
              and found["index"] is not None)
  if source == "auto":
    source = "original" if have_original else "npz" if have_npz else None
  if source == "original" and have_original:
    paths = [found["original"][s] for s in sets]
    build = lambda: _to_arrays(concat([  # noqa: E731
        read_archive(p, size=size, method=method, set_name=s)
        for p, s in zip(paths, sets)]))
  elif source == "npz" and have_npz:
    paths = [found["npz"][s] for s in sets] + [found["index"]]
    build = lambda: _to_arrays(concat([  # noqa: E731
        read_npz(found["npz"][s], found["index"], s, size=size, method=method)
        for s in sets]))
  else:
    searched = []
    for s in sets:
      if source in (None, "original"):
        searched += _original_candidates(root, s)
      if source in (None, "npz"):
        searched += _npz_candidates(root, s)
    if source in (None, "npz"):
      searched += _index_candidates(root)
    raise dd.missing_files_error(
        "omniglot", searched,
        f"no {'usable ' if source is None else source + ' '}files for "
        f"set(s) {list(sets)}")
  key = f"omniglot-{source}-" + dd.fingerprint(paths, **opts)
  arrays, _ = dd.cached(cache_dir, use_cache, key, build)
  return _from_arrays(arrays)
