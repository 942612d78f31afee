"""Natural-image few-shot datasets: mini-ImageNet, tieredImageNet, CIFAR-FS, FC100.

Each loader returns an :class:`ImageClassData`: ``images`` ``(N, H, W, 3)``
uint8 RGB, ``labels`` ``(N,)`` class ids in ``[0, C)`` and per-class names
(WordNet ids or CIFAR-100 names) and groups (tieredImageNet categories, CIFAR
superclasses). Images stay uint8 (4x less memory than float32; the sampler
scales them to [0, 1] after gathering), and
``data.episode_data()`` puts them on the device for
:func:`metajax.data.sampler.sample_tasks`.

* **mini-ImageNet** (Vinyals et al. 2016) with the Ravi & Larochelle (2017)
  split: 64 / 16 / 20 classes x 600 images, classes and files from
  ``splits/miniimagenet_ravi/{train,val,test}.csv`` (``filename,label``).
  Sources: an ``images/`` folder (or ``images.zip``) holding those files;
  the pickle ``mini-imagenet-cache-{split}.pkl`` (``image_data``
  ``(N, 84, 84, 3)`` + ``class_dict`` ``{wnid: [indices]}``, learn2learn's
  format); or MetaOptNet's ``miniImageNet_category_split_*.pickle``
  (``data``, ``labels``, ``catname2label``).
* **tieredImageNet** (Ren et al. 2018): 351 / 97 / 160 classes in 20 / 6 / 8
  categories, ``splits/tieredimagenet/{split}.csv`` (``wnid,category``).
  Sources: Ren et al.'s ``{split}_images_png.pkl`` (a list of PNG-encoded
  images) or its decoded ``{split}_images.npz`` (written by OpenCV: BGR, so
  flipped to RGB here) plus ``{split}_labels.pkl`` (``label_specific``,
  ``label_general``, ``label_specific_str``, ``label_general_str``); or
  folders ``{split}/<wnid>/*`` (tiered-imagenet-tools) or an ILSVRC-12
  ``train/<wnid>/*``. Classes have different sizes (732 to 1300 images).
* **CIFAR-FS** (Bertinetto et al. 2019): 64 / 16 / 20 CIFAR-100 classes;
  **FC100** (Oreshkin et al. 2018): 12 / 4 / 4 superclasses (60 / 20 / 20
  classes). 600 images per class (CIFAR-100 train + test), 32x32. Splits
  from torchmeta's ``splits/torchmeta_assets/cifar100/{cifar-fs,fc100}``.
  Sources: ``cifar-100-python/`` (or the ``.tar.gz``), or MetaOptNet's
  ``CIFAR_FS_{split}.pickle`` / ``FC100_{split}.pickle`` (``data``,
  ``labels`` = CIFAR-100 fine ids).

Files are decoded by :func:`metajax.data.images.decode_image`, the decoder
all loaders share. Resizing (when a source's images are not ``image_size``)
uses PIL's Lanczos filter (that module's default, also for decoded arrays:
:func:`~metajax.data.images.pil_resize`), as Ravi & Larochelle's
mini-ImageNet tools. Decoded arrays are cached as ``.npy``
(:mod:`metajax.data.datadir`). Loaders only read local files; see
``datadir.HOW_TO_GET`` for where to get them.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import re
import tarfile
from pathlib import Path
from typing import Sequence

import numpy as np

from metajax.data import datadir as dd
from metajax.data.images import decode_image, pil_resize

SPLITS = ("train", "val", "test")
MINI_SOURCES = ("auto", "images", "pickle", "metaoptnet")
TIERED_SOURCES = ("auto", "pickle", "folders")
CIFAR_SOURCES = ("auto", "cifar100", "metaoptnet")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclasses.dataclass(frozen=True)
class ImageClassData:
  """Labelled images of one split.

  Attributes:
    images: ``(N, H, W, 3)`` uint8 RGB.
    labels: ``(N,)`` int32 class ids in ``[0, C)``.
    class_names: ``(C,)`` class names (WordNet ids, CIFAR-100 fine names).
    class_groups: ``(C,)`` coarse group per class (tieredImageNet category,
      CIFAR superclass; ``''`` where the dataset has none).
    dataset, split: provenance.
  """
  images: np.ndarray
  labels: np.ndarray
  class_names: np.ndarray
  class_groups: np.ndarray
  dataset: str = ""
  split: str = ""

  def __post_init__(self):
    if self.images.ndim != 4 or self.images.shape[0] != self.labels.shape[0]:
      raise ValueError(
          f"images {self.images.shape} and labels {self.labels.shape} do not "
          "describe (N, H, W, C) images with N labels")
    c = len(self.class_names)
    if len(self.class_groups) != c:
      raise ValueError("class_groups and class_names differ in length")
    if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= c):
      raise ValueError(f"labels outside [0, {c})")

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def counts(self) -> np.ndarray:
    """``(C,)`` images per class."""
    return np.bincount(self.labels, minlength=self.num_classes)

  def dense(self) -> np.ndarray:
    """``(C, E, H, W, 3)`` when every class has ``E`` images."""
    counts = self.counts
    if (counts != counts[0]).any():
      raise ValueError(
          f"classes have {counts.min()}..{counts.max()} images; use "
          "episode_data() (ragged classes) instead of dense()")
    order = np.argsort(self.labels, kind="stable")
    return self.images[order].reshape((self.num_classes, counts[0])
                                      + self.images.shape[1:])

  def episode_data(self, device=None):
    """A device-resident :class:`~metajax.data.sampler.EpisodeData`."""
    from metajax.data.sampler import EpisodeData
    return EpisodeData.from_labels(self.images, self.labels,
                                   num_classes=self.num_classes, device=device)


def _check(name: str, value, allowed: Sequence[str]):
  if value not in allowed:
    raise ValueError(f"unknown {name} {value!r}; choose from {tuple(allowed)}")


def _resize_array(images: np.ndarray, size: int | None) -> np.ndarray:
  """Resizes uint8 ``(N, H, W, 3)`` (no-op if already ``size``)."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"expected (N, H, W, 3) RGB images, got {images.shape}")
  if size is None:
    return images.astype(np.uint8, copy=False)
  return pil_resize(images, size)


def _from_groups(names: list[str], groups: list[str], label_of: np.ndarray,
                 images: np.ndarray, dataset: str, split: str
                 ) -> ImageClassData:
  return ImageClassData(images, np.asarray(label_of, np.int32),
                        np.array(names, dtype=str), np.array(groups, dtype=str),
                        dataset, split)


def _pack(data: ImageClassData):
  return ({"images": data.images, "labels": data.labels,
           "class_names": data.class_names, "class_groups": data.class_groups},
          {"dataset": data.dataset, "split": data.split})


def _unpack(arrays, meta) -> ImageClassData:
  return ImageClassData(arrays["images"], arrays["labels"],
                        arrays["class_names"], arrays["class_groups"],
                        meta.get("dataset", ""), meta.get("split", ""))


def _key(d: dict, name: str):
  """``d[name]`` for str or bytes keys (Python 2 pickles)."""
  if name in d:
    return d[name]
  if name.encode() in d:
    return d[name.encode()]
  raise KeyError(name)


def _str(x) -> str:
  return x.decode() if isinstance(x, bytes) else str(x)


_WNID = re.compile(r"n\d{8}")


def _check_wnids(path: Path, values: Sequence[str], column: str):
  """Every ``column`` value must be an ImageNet WordNet id (``n01532829``).

  Both split formats hold nothing else there, so this is what catches a file
  cut off in its last row (``n015``), which the CSV reader accepts.
  """
  bad = [v for v in values if not _WNID.fullmatch(v.strip())]
  if bad:
    raise ValueError(
        f"{path}: {len(bad)} {column}(s) are not WordNet ids like n01532829, "
        f"e.g. {bad[0]!r} (truncated or damaged file?)")


# -- mini-ImageNet -------------------------------------------------------------
def read_ravi_csv(path) -> tuple[list[str], list[str]]:
  """``(filenames, wnids)`` of a Ravi split CSV (header ``filename,label``)."""
  path = Path(path)
  rows = list(csv.reader(io.StringIO(
      dd.read_text(path, "a 'filename,label' CSV"), newline="")))
  if not rows or [c.strip() for c in rows[0][:2]] != ["filename", "label"]:
    raise ValueError(f"{path}: expected a 'filename,label' header")
  body = [r for r in rows[1:] if r]
  if any(len(r) < 2 for r in body):
    raise ValueError(f"{path}: every row needs 'filename,label'")
  _check_wnids(path, [r[1] for r in body], "label")
  return [r[0] for r in body], [r[1] for r in body]


def _ravi_csv(data_dir, root: Path, split: str) -> Path:
  local = root / f"{split}.csv"
  try:
    return dd.split_file(data_dir, "miniimagenet_ravi", f"{split}.csv")
  except FileNotFoundError:
    if local.is_file():
      return local
    raise


def _labels_from_names(wnids: Sequence[str]):
  names = sorted(set(wnids))
  index = {n: i for i, n in enumerate(names)}
  return names, np.array([index[w] for w in wnids], np.int32)


def load_miniimagenet(data_dir=None, split: str = "train", *,
                      source: str = "auto", image_size: int | None = 84,
                      cache_dir=None, use_cache: bool = True
                      ) -> ImageClassData:
  """mini-ImageNet, Ravi split: 64/16/20 classes x 600 images.

  Args:
    data_dir: root with ``miniimagenet/`` and ``splits/`` (default
      ``$METAJAX_DATA_DIR``).
    split: ``'train'``, ``'val'`` or ``'test'``.
    source: one of :data:`MINI_SOURCES` (``'auto'``: images, then the
      learn2learn pickle, then MetaOptNet's).
    image_size: output side (84 as in the literature); ``None`` keeps the
      files' size (then all must agree).

  Class ids are the sorted WordNet ids of the split.

  Raises:
    FileNotFoundError: no data dir / none of the files (message says which).
    ValueError: corrupt files, or the files disagree with the split CSV.
  """
  _check("split", split, SPLITS)
  _check("mini-ImageNet source", source, MINI_SOURCES)
  root = dd.dataset_dir(data_dir, "miniimagenet")
  cands = {
      "images": [root / "images", root / "images.zip"],
      "pickle": [root / f"mini-imagenet-cache-{split}.pkl"],
      "metaoptnet": [root / "miniImageNet_category_split_"
                     f"{'train_phase_train' if split == 'train' else split}"
                     ".pickle"],
  }
  order = ("images", "pickle", "metaoptnet") if source == "auto" else (source,)
  for src in order:
    path = dd.first_existing(cands[src])
    if path is not None:
      break
  else:
    raise dd.missing_files_error(
        "miniimagenet", [p for s in order for p in cands[s]],
        f"no {'' if source == 'auto' else source + ' '}files for split "
        f"{split!r}")
  try:
    csv_path = _ravi_csv(data_dir, root, split)
  except FileNotFoundError:
    if src == "images":
      raise
    csv_path = None  # a pickle carries its own labels; the CSV only checks

  def build():
    if src == "images":
      data = _mini_from_images(path, csv_path, split, image_size)
    elif src == "pickle":
      raw = dd.load_pickle(path)
      try:
        images = np.asarray(_key(raw, "image_data"))
        class_dict = {_str(k): np.asarray(v) for k, v in
                      _key(raw, "class_dict").items()}
      except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: expected a dict with 'image_data' and "
                         f"'class_dict' ({e})") from e
      names = sorted(class_dict)
      labels = np.full(images.shape[0], -1, np.int32)
      for i, n in enumerate(names):
        labels[class_dict[n]] = i
      if (labels < 0).any():
        raise ValueError(f"{path}: {int((labels < 0).sum())} images belong to "
                         "no class of class_dict")
      data = _from_groups(names, [""] * len(names), labels,
                          _resize_array(images, image_size), "miniimagenet",
                          split)
    else:
      data = _labelled_pickle(path, "miniimagenet", split, image_size,
                              names_key="catname2label")
    if csv_path is not None:
      _, wnids = read_ravi_csv(csv_path)
      want = sorted(set(wnids))
      if sorted(data.class_names.tolist()) != want:
        raise ValueError(
            f"{path}: its {data.num_classes} classes differ from the "
            f"{len(want)} of {csv_path} (wrong split or file?)")
    return _pack(data)

  key = f"miniimagenet-{split}-{src}-" + dd.fingerprint(
      [path] + ([csv_path] if csv_path else []), image_size=image_size)
  return _unpack(*dd.cached(cache_dir, use_cache, key, build))


def _mini_from_images(path: Path, csv_path: Path, split: str,
                      image_size) -> ImageClassData:
  files, wnids = read_ravi_csv(csv_path)
  names, labels = _labels_from_names(wnids)
  if path.is_dir():
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
      raise dd.missing_files_error(
          "miniimagenet", [path / missing[0]],
          f"{len(missing)} of the {len(files)} images of {csv_path.name} are "
          f"missing from {path}")
    images = [decode_image((path / f).read_bytes(), str(path / f),
                           mode="RGB", size=image_size) for f in files]
  else:
    with dd.open_zip(path) as zf:
      members = {Path(n).name: n for n in zf.namelist()}
      missing = [f for f in files if f not in members]
      if missing:
        raise ValueError(f"{path}: {len(missing)} of the {len(files)} images "
                         f"of {csv_path.name} are missing (e.g. {missing[0]})")
      images = [decode_image(dd.read_zip_member(zf, members[f], path),
                             f"{path}:{f}", mode="RGB", size=image_size)
                for f in files]
  shapes = {im.shape for im in images}
  if len(shapes) != 1:
    raise ValueError(f"{path}: images differ in size {sorted(shapes)[:3]}; "
                     "pass image_size to resize them")
  return _from_groups(names, [""] * len(names), labels, np.stack(images),
                      "miniimagenet", split)


def _labelled_pickle(path: Path, dataset: str, split: str, image_size,
                     names_key: str | None = None,
                     id_names: Sequence[str] | None = None) -> ImageClassData:
  """MetaOptNet-style pickle: ``data`` (N, H, W, 3) + integer ``labels``."""
  raw = dd.load_pickle(path)
  try:
    images = np.asarray(_key(raw, "data"))
    ids = np.asarray(_key(raw, "labels")).astype(np.int64)
  except (KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"{path}: expected a dict with 'data' and 'labels' ({e})"
                     ) from e
  if ids.shape != images.shape[:1]:
    raise ValueError(f"{path}: {images.shape[0]} images but {ids.shape} labels")
  uniq = np.unique(ids)
  id_to_name = {}
  if names_key is not None:
    try:
      id_to_name = {int(v): _str(k) for k, v in _key(raw, names_key).items()}
    except KeyError:
      pass
  if id_names is not None:
    id_to_name = {int(i): id_names[int(i)] for i in uniq}
  names = [id_to_name.get(int(i), str(int(i))) for i in uniq]
  labels = np.searchsorted(uniq, ids).astype(np.int32)
  return _from_groups(names, [""] * len(names), labels,
                      _resize_array(images, image_size), dataset, split)


# -- tieredImageNet ------------------------------------------------------------
def read_tiered_csv(path) -> tuple[list[str], list[str]]:
  """``(wnids, categories)`` of a tieredImageNet split CSV (no header)."""
  path = Path(path)
  rows = [r for r in csv.reader(io.StringIO(
      dd.read_text(path, "a 'wnid,category' CSV"), newline="")) if r]
  if not rows:
    raise ValueError(f"{path} lists no classes; expected 'wnid,category' rows")
  if any(len(r) < 2 for r in rows):
    raise ValueError(f"{path}: every row needs 'wnid,category'")
  _check_wnids(path, [r[0] for r in rows] + [r[1] for r in rows], "wnid")
  return [r[0] for r in rows], [r[1] for r in rows]


def load_tieredimagenet(data_dir=None, split: str = "train", *,
                        source: str = "auto", image_size: int | None = 84,
                        cache_dir=None, use_cache: bool = True
                        ) -> ImageClassData:
  """tieredImageNet: 351/97/160 classes (ragged sizes), 84x84.

  Args: as :func:`load_miniimagenet`; ``source`` one of
  :data:`TIERED_SOURCES`. With ``'pickle'`` the class names are Ren et
  al.'s ``label_specific_str`` and groups ``label_general_str``; with
  ``'folders'`` WordNet ids and their category ids from the split CSV, in CSV
  order.

  Raises:
    FileNotFoundError / ValueError as :func:`load_miniimagenet`; also when
    the number of classes disagrees with the split CSV.
  """
  _check("split", split, SPLITS)
  _check("tieredImageNet source", source, TIERED_SOURCES)
  root = dd.dataset_dir(data_dir, "tieredimagenet")
  labels_pkl = root / f"{split}_labels.pkl"
  cands = {
      "pickle": [root / f"{split}_images_png.pkl",
                 root / f"{split}_images.npz"],
      "folders": [root / split, root / "train"],
  }
  order = ("pickle", "folders") if source == "auto" else (source,)
  path = None
  for src in order:
    path = dd.first_existing(cands[src])
    if path is not None and (src != "pickle" or labels_pkl.is_file()):
      break
    path = None
  if path is None:
    searched = [p for s in order for p in cands[s]]
    if "pickle" in order:
      searched.append(labels_pkl)
    raise dd.missing_files_error("tieredimagenet", searched,
                                 f"no files for split {split!r}")
  try:
    csv_path = dd.split_file(data_dir, "tieredimagenet", f"{split}.csv")
  except FileNotFoundError:
    if src == "folders":
      raise
    csv_path = None

  def build():
    if src == "pickle":
      data = _tiered_from_pickle(path, labels_pkl, split, image_size)
    else:
      data = _tiered_from_folders(path, csv_path, split, image_size)
    if csv_path is not None:
      wnids, _ = read_tiered_csv(csv_path)
      if data.num_classes != len(set(wnids)):
        raise ValueError(
            f"{path}: {data.num_classes} classes, but {csv_path} lists "
            f"{len(set(wnids))} for split {split!r} (wrong split or file?)")
    return _pack(data)

  paths = [path] + ([labels_pkl] if src == "pickle" else [])
  paths += [csv_path] if csv_path else []
  key = f"tieredimagenet-{split}-{src}-" + dd.fingerprint(
      paths, image_size=image_size)
  return _unpack(*dd.cached(cache_dir, use_cache, key, build))


def _tiered_from_pickle(path: Path, labels_pkl: Path, split: str,
                        image_size) -> ImageClassData:
  meta = dd.load_pickle(labels_pkl)
  try:
    specific = np.asarray(_key(meta, "label_specific")).astype(np.int64)
    general = np.asarray(_key(meta, "label_general")).astype(np.int64)
    specific_str = [_str(s) for s in _key(meta, "label_specific_str")]
    general_str = [_str(s) for s in _key(meta, "label_general_str")]
  except (KeyError, TypeError, AttributeError) as e:
    raise ValueError(
        f"{labels_pkl}: expected label_specific, label_general, "
        f"label_specific_str, label_general_str ({e})") from e
  if path.suffix == ".npz":
    # Ren et al. decode with OpenCV, which returns BGR.
    images = dd.load_npz(path, ["images"])["images"][..., ::-1]
    images = _resize_array(images, image_size)
  else:
    encoded = dd.load_pickle(path)
    images = np.stack([
        decode_image(np.asarray(e, np.uint8).tobytes(), f"{path}[{i}]",
                     mode="RGB", size=image_size)
        for i, e in enumerate(encoded)])
  if images.shape[0] != specific.shape[0]:
    raise ValueError(f"{path} has {images.shape[0]} images but {labels_pkl} "
                     f"labels {specific.shape[0]}")
  c = len(specific_str)
  if specific.size and (specific.min() < 0 or specific.max() >= c):
    raise ValueError(f"{labels_pkl}: label_specific outside [0, {c})")
  groups = [""] * c
  for s, g in zip(specific, general):
    groups[s] = general_str[g] if g < len(general_str) else str(g)
  return _from_groups(specific_str, groups, specific,
                      np.ascontiguousarray(images), "tieredimagenet", split)


def _tiered_from_folders(path: Path, csv_path: Path, split: str,
                         image_size) -> ImageClassData:
  wnids, cats = read_tiered_csv(csv_path)
  missing = [w for w in wnids if not (path / w).is_dir()]
  if missing:
    raise dd.missing_files_error(
        "tieredimagenet", [path / m for m in missing[:3]],
        f"{len(missing)} of the {len(wnids)} class folders of {csv_path.name} "
        f"are missing from {path}")
  images, labels = [], []
  for i, w in enumerate(wnids):
    files = sorted(p for p in (path / w).iterdir()
                   if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
      raise ValueError(f"{path / w} holds no images")
    images += [decode_image(p.read_bytes(), str(p), mode="RGB",
                            size=image_size) for p in files]
    labels += [i] * len(files)
  shapes = {im.shape for im in images}
  if len(shapes) != 1:
    raise ValueError(f"{path}: images differ in size; pass image_size")
  return _from_groups(wnids, cats, np.array(labels), np.stack(images),
                      "tieredimagenet", split)


# -- CIFAR-FS and FC100 --------------------------------------------------------
def read_cifar_split(data_dir, benchmark: str, split: str
                     ) -> list[tuple[str, str]]:
  """``[(superclass, class)]`` of a CIFAR-FS or FC100 split (torchmeta's JSON).

  FC100's files list superclasses; they expand to their five classes using
  the (superclass, class) pairs of the CIFAR-FS files, which cover all 100.
  """
  folder = {"cifar_fs": "cifar-fs", "fc100": "fc100"}[benchmark]
  path = dd.split_file(data_dir, "torchmeta_assets", "cifar100", folder,
                       f"{split}.json")
  items = dd.load_json(path, "torchmeta's split JSON")
  if benchmark == "cifar_fs":
    if not all(isinstance(p, list) and len(p) == 2 for p in items):
      raise ValueError(f"{path}: expected [[superclass, class], ...]")
    return [tuple(p) for p in items]
  pairs = []
  for s in SPLITS:
    pairs += read_cifar_split(data_dir, "cifar_fs", s)
  supers = set(items)
  out = sorted(p for p in pairs if p[0] in supers)
  if len({p[0] for p in out}) != len(supers):
    raise ValueError(f"{path}: unknown superclass(es) "
                     f"{sorted(supers - {p[0] for p in out})}")
  return out


def _cifar100_arrays(source: Path):
  """All 60,000 CIFAR-100 images ``(N, 32, 32, 3)``, fine ids, fine names."""
  def parts_from_dir(d: Path):
    return {n: dd.load_pickle(d / n) for n in ("train", "test", "meta")}

  if source.is_dir():
    parts = parts_from_dir(source)
  else:
    import pickle
    dd.check_file(source, "cifar-100-python.tar.gz")
    parts = {}
    try:
      with tarfile.open(source) as tf:
        for m in tf.getmembers():
          name = Path(m.name).name
          if name in ("train", "test", "meta") and m.isfile():
            parts[name] = pickle.loads(tf.extractfile(m).read(),
                                       encoding="latin1")
    except FileNotFoundError:
      raise
    except Exception as e:  # tar, gzip, zlib and unpickling errors alike
      raise ValueError(f"{source} is not a readable CIFAR-100 archive "
                       f"(corrupt or truncated: {e})") from e
    if set(parts) != {"train", "test", "meta"}:
      raise ValueError(f"{source} lacks cifar-100-python/{{train,test,meta}}")
  try:
    names = [_str(n) for n in _key(parts["meta"], "fine_label_names")]
    images, ids = [], []
    for n in ("train", "test"):
      flat = np.asarray(_key(parts[n], "data"), np.uint8)
      images.append(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
      ids.append(np.asarray(_key(parts[n], "fine_labels"), np.int64))
  except (KeyError, ValueError, TypeError) as e:
    raise ValueError(f"{source}: not the CIFAR-100 python format ({e})") from e
  return np.concatenate(images), np.concatenate(ids), names


def _load_cifar(benchmark: str, data_dir, split: str, source: str,
                image_size, cache_dir, use_cache: bool) -> ImageClassData:
  _check("split", split, SPLITS)
  _check("CIFAR source", source, CIFAR_SOURCES)
  root = dd.dataset_dir(data_dir, "cifar100", "cifar_fs")
  prefix = {"cifar_fs": "CIFAR_FS", "fc100": "FC100"}[benchmark]
  cands = {"cifar100": [root / "cifar-100-python",
                        root / "cifar-100-python.tar.gz"],
           "metaoptnet": [root / f"{prefix}_{split}.pickle"]}
  order = ("cifar100", "metaoptnet") if source == "auto" else (source,)
  for src in order:
    path = dd.first_existing(cands[src])
    if path is not None:
      break
  else:
    raise dd.missing_files_error("cifar_fs", [p for s in order
                                              for p in cands[s]],
                                 f"no {benchmark} files for split {split!r}")
  classes = read_cifar_split(data_dir, benchmark, split)
  group_of = dict((c, s) for s, c in classes)
  all_pairs = [p for s in SPLITS for p in read_cifar_split(data_dir,
                                                            "cifar_fs", s)]
  # CIFAR-100's fine label ids are the alphabetical order of the names.
  fine_names = sorted(c for _, c in all_pairs)

  def build():
    if src == "cifar100":
      images, ids, names = _cifar100_arrays(path)
      wanted = [c for _, c in classes]
      unknown = [c for c in wanted if c not in names]
      if unknown:
        raise ValueError(f"{path}: no CIFAR-100 class(es) {unknown[:3]}")
      index = {n: i for i, n in enumerate(names)}
      keep_ids = sorted(index[c] for c in wanted)
      mask = np.isin(ids, keep_ids)
      labels = np.searchsorted(keep_ids, ids[mask])
      out_names = [names[i] for i in keep_ids]
      data = _from_groups(out_names, [group_of[n] for n in out_names], labels,
                          _resize_array(images[mask], image_size), benchmark,
                          split)
    else:
      data = _labelled_pickle(path, benchmark, split, image_size,
                              id_names=fine_names)
      want = sorted(c for _, c in classes)
      if sorted(data.class_names.tolist()) != want:
        raise ValueError(
            f"{path}: its classes differ from the {benchmark} {split!r} split "
            f"({data.num_classes} vs {len(want)} classes)")
      data = dataclasses.replace(data, class_groups=np.array(
          [group_of[n] for n in data.class_names.tolist()], dtype=str))
    return _pack(data)

  key = f"{benchmark}-{split}-{src}-" + dd.fingerprint(
      [path], image_size=image_size)
  return _unpack(*dd.cached(cache_dir, use_cache, key, build))


def load_cifar_fs(data_dir=None, split: str = "train", *, source: str = "auto",
                  image_size: int | None = 32, cache_dir=None,
                  use_cache: bool = True) -> ImageClassData:
  """CIFAR-FS: 64/16/20 CIFAR-100 classes x 600 images, 32x32.

  Class ids are the CIFAR-100 fine ids of the split in increasing order;
  ``class_groups`` are their superclasses. ``source`` is one of
  :data:`CIFAR_SOURCES`. Raises as :func:`load_miniimagenet`.
  """
  return _load_cifar("cifar_fs", data_dir, split, source, image_size,
                     cache_dir, use_cache)


def load_fc100(data_dir=None, split: str = "train", *, source: str = "auto",
               image_size: int | None = 32, cache_dir=None,
               use_cache: bool = True) -> ImageClassData:
  """FC100: 12/4/4 CIFAR-100 superclasses (60/20/20 classes x 600), 32x32.

  As :func:`load_cifar_fs`, split by superclass so that test classes are
  semantically far from training classes.
  """
  return _load_cifar("fc100", data_dir, split, source, image_size, cache_dir,
                     use_cache)
