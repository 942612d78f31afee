"""mini-ImageNet / tieredImageNet / CIFAR-FS / FC100 loaders on generated fixtures."""
from __future__ import annotations

import io
import json
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from metajax.data import imagenet
from metajax.data.sampler import EpisodeData

RNG = np.random.default_rng(0)


def png(arr) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.asarray(arr, np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


def image(label: int, i: int, side: int = 8) -> np.ndarray:
  """An RGB image that encodes (label, i) in its first pixel."""
  x = RNG.integers(0, 256, (side, side, 3), dtype=np.uint8)
  x[0, 0] = (label, i, 7)
  return x


# -- mini-ImageNet -------------------------------------------------------------
WNIDS = ["n01532829", "n01558993", "n01704323"]


def mini_fixture(root, split="train", per_class=4, side=8, as_zip=False):
  """Ravi CSV + images for 3 classes; returns {filename: image}."""
  rows, files = ["filename,label"], {}
  for c, w in enumerate(WNIDS):
    for i in range(per_class):
      name = f"{w}{i:08d}.jpg"  # PNG bytes under Ravi's .jpg names
      rows.append(f"{name},{w}")
      files[name] = image(c, i, side)
  sp = root / "splits" / "miniimagenet_ravi"
  sp.mkdir(parents=True, exist_ok=True)
  (sp / f"{split}.csv").write_text("\n".join(rows) + "\n")
  mini = root / "miniimagenet"
  mini.mkdir(exist_ok=True)
  if as_zip:
    with zipfile.ZipFile(mini / "images.zip", "w") as zf:
      for name, x in files.items():
        zf.writestr(f"images/{name}", png(x))
  else:
    (mini / "images").mkdir()
    for name, x in files.items():
      (mini / "images" / name).write_bytes(png(x))
  return files


@pytest.mark.parametrize("as_zip", [False, True])
def test_mini_images_folder_and_zip(tmp_path, as_zip):
  files = mini_fixture(tmp_path, as_zip=as_zip)
  d = imagenet.load_miniimagenet(tmp_path, "train", image_size=8,
                                 cache_dir=tmp_path / "cache")
  assert d.images.shape == (12, 8, 8, 3) and d.images.dtype == np.uint8
  assert d.class_names.tolist() == WNIDS
  np.testing.assert_array_equal(d.counts, [4, 4, 4])
  for x, y in zip(d.images, d.labels):
    assert x[0, 0, 0] == y  # the image's own class
  np.testing.assert_array_equal(d.images, np.stack(list(files.values())))
  assert d.dense().shape == (3, 4, 8, 8, 3)
  # resized with PIL's Lanczos filter
  small = imagenet.load_miniimagenet(tmp_path, "train", image_size=4,
                                     use_cache=False)
  want = Image.fromarray(files[f"{WNIDS[1]}{2:08d}.jpg"]).resize(
      (4, 4), Image.Resampling.LANCZOS)
  np.testing.assert_array_equal(small.images[6], np.asarray(want))
  # cached: the second load is the same
  again = imagenet.load_miniimagenet(tmp_path, "train", image_size=8,
                                     cache_dir=tmp_path / "cache")
  np.testing.assert_array_equal(again.images, d.images)


def test_mini_pickles(tmp_path):
  mini_fixture(tmp_path)  # only for the CSV
  mini = tmp_path / "miniimagenet"
  imgs = np.stack([image(c, i) for c in range(3) for i in range(4)])
  order = RNG.permutation(12)
  class_dict = {w: [int(np.flatnonzero(order == c * 4 + i)[0])
                    for i in range(4)] for c, w in enumerate(WNIDS)}
  with open(mini / "mini-imagenet-cache-train.pkl", "wb") as f:
    pickle.dump({"image_data": imgs[order], "class_dict": class_dict}, f)
  d = imagenet.load_miniimagenet(tmp_path, "train", source="pickle",
                                 image_size=8, use_cache=False)
  assert d.class_names.tolist() == WNIDS
  assert all(x[0, 0, 0] == y for x, y in zip(d.images, d.labels))
  big = imagenet.load_miniimagenet(tmp_path, "train", source="pickle",
                                   use_cache=False)
  assert big.images.shape == (12, 84, 84, 3)  # default size: resized to 84
  ids = np.array([int(c) for c in (order // 4)])
  with open(mini / "miniImageNet_category_split_train_phase_train.pickle",
            "wb") as f:
    pickle.dump({"data": imgs[order], "labels": ids.tolist(),
                 "catname2label": {w: i for i, w in enumerate(WNIDS)}}, f,
                protocol=2)
  m = imagenet.load_miniimagenet(tmp_path, "train", source="metaoptnet",
                                 image_size=8, use_cache=False)
  assert m.class_names.tolist() == WNIDS
  assert all(x[0, 0, 0] == y for x, y in zip(m.images, m.labels))
  # a pickle whose classes are not the split's
  with open(mini / "mini-imagenet-cache-val.pkl", "wb") as f:
    pickle.dump({"image_data": imgs, "class_dict": class_dict}, f)
  (tmp_path / "splits" / "miniimagenet_ravi" / "val.csv").write_text(
      "filename,label\nx.jpg,n09999999\n")
  with pytest.raises(ValueError, match="differ from the 1 of"):
    imagenet.load_miniimagenet(tmp_path, "val", source="pickle",
                               use_cache=False)
  # truncated pickle: the error names the file
  raw = (mini / "mini-imagenet-cache-train.pkl").read_bytes()
  (mini / "mini-imagenet-cache-train.pkl").write_bytes(raw[: len(raw) // 3])
  with pytest.raises(ValueError, match="mini-imagenet-cache-train.pkl"):
    imagenet.load_miniimagenet(tmp_path, "train", source="pickle",
                               use_cache=False)


def test_mini_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown split"):
    imagenet.load_miniimagenet(tmp_path, "trainval")
  with pytest.raises(ValueError, match="unknown mini-ImageNet source"):
    imagenet.load_miniimagenet(tmp_path, "train", source="h5")
  (tmp_path / "miniimagenet").mkdir()
  with pytest.raises(FileNotFoundError) as e:
    imagenet.load_miniimagenet(tmp_path, "test")
  msg = str(e.value)
  assert "mini-imagenet-cache-test.pkl" in msg and "images" in msg
  assert "miniimagenet_ravi" in msg  # says where the split comes from
  files = mini_fixture(tmp_path / "m")
  (tmp_path / "m" / "miniimagenet" / "images" / next(iter(files))).unlink()
  with pytest.raises(FileNotFoundError, match="1 of the 12 images"):
    imagenet.load_miniimagenet(tmp_path / "m", "train", use_cache=False)


# -- tieredImageNet ------------------------------------------------------------
def tiered_fixture(root, counts=(3, 5, 4), split="train"):
  """Ren et al.'s pickles (bytes keys, as Python 2 wrote them) + split CSV."""
  t = root / "tieredimagenet"
  t.mkdir(parents=True, exist_ok=True)
  labels = np.repeat(np.arange(len(counts)), counts)
  order = RNG.permutation(len(labels))
  labels = labels[order]
  imgs = np.stack([image(int(y), i) for i, y in enumerate(labels)])
  general = (labels >= 1).astype(np.int64)  # class 0 -> cat A, others cat B
  with open(t / f"{split}_images_png.pkl", "wb") as f:
    pickle.dump([np.frombuffer(png(x), np.uint8) for x in imgs], f)
  with open(t / f"{split}_labels.pkl", "wb") as f:
    pickle.dump({b"label_specific": labels, b"label_general": general,
                 b"label_specific_str": [b"house finch", b"robin", b"jay"],
                 b"label_general_str": [b"bird A", b"bird B"]}, f)
  sp = root / "splits" / "tieredimagenet"
  sp.mkdir(parents=True, exist_ok=True)
  (sp / f"{split}.csv").write_text(
      "n01530575,n01524359\nn01531178,n01524359\nn01532829,n01524359\n")
  return imgs, labels


def test_tiered_pickle_ragged(tmp_path):
  imgs, labels = tiered_fixture(tmp_path)
  d = imagenet.load_tieredimagenet(tmp_path, "train", image_size=8,
                                   cache_dir=tmp_path / "c")
  np.testing.assert_array_equal(d.images, imgs)
  np.testing.assert_array_equal(d.labels, labels)
  np.testing.assert_array_equal(d.counts, [3, 5, 4])
  assert d.class_names.tolist() == ["house finch", "robin", "jay"]
  assert d.class_groups.tolist() == ["bird A", "bird B", "bird B"]
  with pytest.raises(ValueError, match="episode_data"):
    d.dense()
  ed = d.episode_data()
  assert isinstance(ed, EpisodeData) and ed.min_count == 3
  # the decoded npz variant (OpenCV wrote it: BGR)
  t = tmp_path / "tieredimagenet"
  (t / "train_images_png.pkl").unlink()
  np.savez(t / "train_images.npz", images=imgs[..., ::-1])
  n = imagenet.load_tieredimagenet(tmp_path, "train", image_size=8,
                                   use_cache=False)
  np.testing.assert_array_equal(n.images, imgs)
  # the number of classes is checked against the split CSV
  (tmp_path / "splits" / "tieredimagenet" / "train.csv").write_text(
      "n01530575,n01524359\n")
  with pytest.raises(ValueError, match="lists 1 for split 'train'"):
    imagenet.load_tieredimagenet(tmp_path, "train", use_cache=False)


def test_tiered_folders(tmp_path):
  sp = tmp_path / "splits" / "tieredimagenet"
  sp.mkdir(parents=True)
  (sp / "val.csv").write_text("n02099267,n02098550\nn02099429,n02098550\n"
                              "n03314780,n00020090\n")
  root = tmp_path / "tieredimagenet" / "val"
  for c, w in enumerate(["n02099267", "n02099429", "n03314780"]):
    (root / w).mkdir(parents=True)
    for i in range(2 + c):
      (root / w / f"{w}_{i}.JPEG").write_bytes(png(image(c, i, side=12)))
  (root / "n02099267" / "notes.txt").write_text("not an image")
  d = imagenet.load_tieredimagenet(tmp_path, "val", image_size=8,
                                   use_cache=False)
  assert d.images.shape == (9, 8, 8, 3)
  np.testing.assert_array_equal(d.counts, [2, 3, 4])
  assert d.class_groups.tolist() == ["n02098550", "n02098550", "n00020090"]
  (sp / "val.csv").write_text((sp / "val.csv").read_text() +
                              "n09999999,n00020090\n")
  with pytest.raises(FileNotFoundError, match="1 of the 4 class folders"):
    imagenet.load_tieredimagenet(tmp_path, "val", use_cache=False)


def test_tiered_missing_and_corrupt(tmp_path):
  (tmp_path / "tieredimagenet").mkdir()
  with pytest.raises(FileNotFoundError) as e:
    imagenet.load_tieredimagenet(tmp_path, "test")
  assert "test_images_png.pkl" in str(e.value)
  assert "few-shot-ssl-public" in str(e.value)
  tiered_fixture(tmp_path / "x")
  f = tmp_path / "x" / "tieredimagenet" / "train_images_png.pkl"
  f.write_bytes(f.read_bytes()[:100])
  with pytest.raises(ValueError, match="train_images_png.pkl"):
    imagenet.load_tieredimagenet(tmp_path / "x", "train", use_cache=False)


# -- CIFAR-FS / FC100 ----------------------------------------------------------
FINE = ["apple", "bear", "bee", "beetle", "maple_tree"]  # alphabetical
SUPER = {"apple": "fruit_and_vegetables", "bear": "large_carnivores",
         "bee": "insects", "beetle": "insects", "maple_tree": "trees"}


def cifar_splits(root):
  base = root / "splits" / "torchmeta_assets" / "cifar100"
  fs, fc = base / "cifar-fs", base / "fc100"
  fs.mkdir(parents=True)
  fc.mkdir(parents=True)
  parts = {"train": ["apple", "bee"], "val": ["maple_tree"],
           "test": ["bear", "beetle"]}
  for split, names in parts.items():
    (fs / f"{split}.json").write_text(json.dumps(
        [[SUPER[n], n] for n in names]))
  for split, supers in {"train": ["insects"], "val": ["trees"],
                        "test": ["fruit_and_vegetables",
                                 "large_carnivores"]}.items():
    (fc / f"{split}.json").write_text(json.dumps(supers))


def cifar_images(n_per_class):
  """Planar CIFAR rows whose pixels encode (fine id, image index)."""
  ids = np.repeat(np.arange(len(FINE)), n_per_class)
  hwc = np.zeros((len(ids), 32, 32, 3), np.uint8)
  hwc[..., 0] = ids[:, None, None]
  hwc[..., 1] = np.arange(len(ids))[:, None, None]
  hwc[..., 2] = 200
  return hwc, ids


def cifar_fixture(root, as_tar=False):
  cifar_splits(root)
  c = root / "cifar100"
  c.mkdir()
  train, train_ids = cifar_images(3)
  test, test_ids = cifar_images(1)
  parts = {
      "train": {"data": train.transpose(0, 3, 1, 2).reshape(len(train), -1),
                "fine_labels": train_ids.tolist()},
      "test": {"data": test.transpose(0, 3, 1, 2).reshape(len(test), -1),
               "fine_labels": test_ids.tolist()},
      "meta": {"fine_label_names": FINE},
  }
  if as_tar:
    with tarfile.open(c / "cifar-100-python.tar.gz", "w:gz") as tf:
      for name, obj in parts.items():
        raw = pickle.dumps(obj, protocol=2)
        info = tarfile.TarInfo(f"cifar-100-python/{name}")
        info.size = len(raw)
        tf.addfile(info, io.BytesIO(raw))
  else:
    (c / "cifar-100-python").mkdir()
    for name, obj in parts.items():
      with open(c / "cifar-100-python" / name, "wb") as f:
        pickle.dump(obj, f, protocol=2)
  return np.concatenate([train, test]), np.concatenate([train_ids, test_ids])


@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar_fs_and_fc100(tmp_path, as_tar):
  imgs, ids = cifar_fixture(tmp_path, as_tar=as_tar)
  d = imagenet.load_cifar_fs(tmp_path, "train", use_cache=False)
  assert d.class_names.tolist() == ["apple", "bee"]
  assert d.class_groups.tolist() == ["fruit_and_vegetables", "insects"]
  assert d.images.shape == (8, 32, 32, 3)  # 3 train + 1 test per class
  np.testing.assert_array_equal(d.counts, [4, 4])
  # channels-last decoding of CIFAR's planar rows
  assert (d.images[..., 2] == 200).all()
  np.testing.assert_array_equal(np.array(FINE)[d.images[:, 0, 0, 0]],
                                d.class_names[d.labels])
  f = imagenet.load_fc100(tmp_path, "test", use_cache=False)
  assert f.class_names.tolist() == ["apple", "bear"]
  assert f.class_groups.tolist() == ["fruit_and_vegetables",
                                     "large_carnivores"]
  g = imagenet.load_fc100(tmp_path, "train", image_size=16,
                          cache_dir=tmp_path / "c")
  assert g.class_names.tolist() == ["bee", "beetle"]
  assert g.images.shape == (8, 16, 16, 3)


def test_cifar_metaoptnet_pickle_and_errors(tmp_path):
  cifar_splits(tmp_path)
  c = tmp_path / "cifar100"
  c.mkdir()
  imgs, ids = cifar_images(2)
  keep = np.isin(ids, [0, 2])  # apple, bee = CIFAR-FS train
  with open(c / "CIFAR_FS_train.pickle", "wb") as f:
    pickle.dump({"data": imgs[keep], "labels": ids[keep].tolist()}, f,
                protocol=2)
  d = imagenet.load_cifar_fs(tmp_path, "train", use_cache=False)
  assert d.class_names.tolist() == ["apple", "bee"]
  assert d.class_groups.tolist() == ["fruit_and_vegetables", "insects"]
  np.testing.assert_array_equal(np.array(FINE)[d.images[:, 0, 0, 0]],
                                d.class_names[d.labels])
  with open(c / "CIFAR_FS_val.pickle", "wb") as f:  # wrong classes
    pickle.dump({"data": imgs[keep], "labels": ids[keep].tolist()}, f)
  with pytest.raises(ValueError, match="differ from the cifar_fs 'val'"):
    imagenet.load_cifar_fs(tmp_path, "val", use_cache=False)
  with pytest.raises(FileNotFoundError, match="FC100_test.pickle"):
    imagenet.load_fc100(tmp_path, "test", use_cache=False)
  (c / "cifar-100-python.tar.gz").write_bytes(b"\x1f\x8b broken")
  with pytest.raises(ValueError, match="cifar-100-python.tar.gz"):
    imagenet.load_cifar_fs(tmp_path, "train", source="cifar100",
                           use_cache=False)
  with pytest.raises(ValueError, match="unknown CIFAR source"):
    imagenet.load_fc100(tmp_path, "train", source="png")


def test_loaded_images_feed_the_sampler(tmp_path):
  import jax
  from metajax.data import sampler
  tiered_fixture(tmp_path)
  d = imagenet.load_tieredimagenet(tmp_path, "train", image_size=8,
                                   use_cache=False)
  t = sampler.sample_tasks(jax.random.key(0), d.episode_data(), ways=3,
                           shots=1, queries=2, num_tasks=2)
  assert t.support_x.shape == (2, 3, 8, 8, 3)
  x = np.asarray(t.support_x)
  assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
  # each image's encoded label is its task class
  first = np.rint(x[..., 0, 0, 0] * 255).astype(int)
  for i in range(2):
    by_label = {}
    for lab, cls in zip(np.asarray(t.support_y[i]), first[i]):
      by_label.setdefault(int(lab), set()).add(int(cls))
    assert all(len(v) == 1 for v in by_label.values())
    assert len({next(iter(v)) for v in by_label.values()}) == 3


# -- the real split files ------------------------------------------------------
def test_real_split_files(shared_data_dir):
  sizes = {"train": 64, "val": 16, "test": 20}
  seen = set()
  for split, n in sizes.items():
    files, wnids = imagenet.read_ravi_csv(
        shared_data_dir / "splits" / "miniimagenet_ravi" / f"{split}.csv")
    assert len(set(wnids)) == n and len(files) == 600 * n
    assert not seen & set(wnids)
    seen |= set(wnids)
  tiered = {"train": (351, 20), "val": (97, 6), "test": (160, 8)}
  for split, (n, cats) in tiered.items():
    w, c = imagenet.read_tiered_csv(
        shared_data_dir / "splits" / "tieredimagenet" / f"{split}.csv")
    assert (len(set(w)), len(set(c))) == (n, cats)
  fs = {s: imagenet.read_cifar_split(shared_data_dir, "cifar_fs", s)
        for s in ("train", "val", "test")}
  fc = {s: imagenet.read_cifar_split(shared_data_dir, "fc100", s)
        for s in ("train", "val", "test")}
  assert [len(fs[s]) for s in fs] == [64, 16, 20]
  assert [len(fc[s]) for s in fc] == [60, 20, 20]
  assert [len({g for g, _ in fc[s]}) for s in fc] == [12, 4, 4]
  for parts in (fs, fc):
    names = [c for s in parts for _, c in parts[s]]
    assert len(names) == len(set(names)) == 100
