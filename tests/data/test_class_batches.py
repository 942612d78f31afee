"""ClassBatchSampler: global labels that name the image's class and turn."""
import jax
import numpy as np
import pytest

from metajax.data import sampler


def _data(classes=5, examples=4, size=6):
  # every image is unique and knows its class: pixel (0, 0) = class,
  # pixel (0, 1) = example, the rest random
  rng = np.random.default_rng(0)
  x = rng.integers(0, 255, size=(classes, examples, size, size, 1),
                   dtype=np.uint8)
  x[:, :, 0, 0, 0] = np.arange(classes)[:, None]
  x[:, :, 0, 1, 0] = np.arange(examples)[None]
  return x


@pytest.mark.parametrize("rotation", ["none", "classes", "per_task"])
def test_labels_name_the_class_and_turn(rotation):
  data = _data()
  s = sampler.ClassBatchSampler(data, batch_size=9, num_tasks=3,
                                rotation=rotation)
  t = s(jax.random.PRNGKey(0))
  assert t.support_x.shape == (3, 4, 6, 6, 1) and t.query_x.shape == (3, 5, 6,
                                                                       6, 1)
  x = np.concatenate([np.asarray(t.support_x), np.asarray(t.query_x)], 1)
  y = np.concatenate([np.asarray(t.support_y), np.asarray(t.query_y)], 1)
  assert s.num_labels == (20 if rotation == "classes" else 5)
  assert y.min() >= 0 and y.max() < s.num_labels
  flat = data.reshape(20, 6, 6, 1).astype(np.float32) / 255
  for img, label in zip(x.reshape(-1, 6, 6, 1), y.reshape(-1)):
    # find the turn and the source image among the dataset's images
    found = [(k, i) for k in range(4) for i in range(20)
             if np.allclose(np.rot90(flat[i], k, axes=(0, 1)), img)]
    assert len(found) == 1
    k, i = found[0]
    base = i // 4
    if rotation == "classes":
      assert label == 4 * base + k
    else:
      assert label == base
      assert k == 0 or rotation == "per_task"
  # pure in the key
  again = s(jax.random.PRNGKey(0))
  np.testing.assert_array_equal(np.asarray(again.query_x),
                                np.asarray(t.query_x))


def test_draws_cover_the_classes_evenly():
  s = sampler.ClassBatchSampler(_data(classes=4), batch_size=400)
  t = s(jax.random.PRNGKey(1))
  y = np.concatenate([np.asarray(t.support_y), np.asarray(t.query_y)], 1)
  counts = np.bincount(y.reshape(-1), minlength=4)
  assert counts.min() > 70  # 100 expected per class
  assert s.config()["num_labels"] == 4


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="batch_size"):
    sampler.ClassBatchSampler(_data(), batch_size=1)
  with pytest.raises(ValueError, match="rotation"):
    sampler.ClassBatchSampler(_data(), batch_size=4, rotation="spin")
  with pytest.raises(ValueError, match="square"):
    sampler.ClassBatchSampler(np.zeros((2, 3, 4, 5, 1), np.uint8),
                              batch_size=4, rotation="classes")
