"""The on-device episodic sampler: task structure, rotations, seeds, jit/vmap."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax
from metajax.data import sampler as sp

C, E, S = 6, 7, 4  # classes, examples per class, image side


def marked_images(c=C, e=E, side=S):
  """``(c, e, side, side, 1)``: image ``i`` is 0 except value ``i+1`` at (0, 1).

  One off-centre pixel makes every quarter turn distinguishable.
  """
  x = np.zeros((c * e, side, side, 1), np.float32)
  x[:, 0, 1, 0] = np.arange(1, c * e + 1)
  return x.reshape(c, e, side, side, 1)


@pytest.fixture(scope="module")
def data():
  return sp.EpisodeData.from_dense(marked_images())


def turns_of(x, original):
  """The ``k`` with ``x == rot90(original, k)`` (exactly one exists)."""
  ks = [k for k in range(4)
        if np.array_equal(x, np.rot90(original, k, axes=(0, 1)))]
  assert len(ks) == 1
  return ks[0]


@pytest.mark.parametrize("rotation", sp.ROTATIONS)
def test_task_structure_and_rotation_policy(data, rotation):
  ways, shots, queries, t = 4, 2, 3, 24
  tasks, ep = sp.sample_tasks(jax.random.key(3), data, ways=ways, shots=shots,
                              queries=queries, num_tasks=t, rotation=rotation,
                              return_episodes=True)
  assert isinstance(tasks, metajax.Task)
  assert tasks.support_x.shape == (t, ways * shots, S, S, 1)
  assert tasks.query_x.shape == (t, ways * queries, S, S, 1)
  assert tasks.support_y.shape == (t, ways * shots)
  assert tasks.support_x.dtype == jnp.float32
  assert tasks.support_y.dtype == tasks.query_y.dtype == jnp.int32
  metajax.check_tasks(tasks, classification=True, ways=ways)
  flat = np.asarray(data.images)
  ep = jax.tree_util.tree_map(np.asarray, ep)
  x = {"support": np.asarray(tasks.support_x),
       "query": np.asarray(tasks.query_x)}
  seen_turns = set()
  for i in range(t):
    classes = ep.classes[i]
    assert len(set(classes.tolist())) == ways  # distinct classes
    base = classes // 4 if rotation == "classes" else classes
    if rotation == "classes":
      np.testing.assert_array_equal(ep.rotations[i], classes % 4)
    elif rotation == "none":
      assert not ep.rotations[i].any()
    s_idx, q_idx = ep.support_index[i], ep.query_index[i]
    # An "image" is a drawing at a turn: with rotation='classes' one drawing
    # may serve two rotated classes of a task (as in ProtoNets).
    s_img = set(zip(s_idx.tolist(), ep.support_rot[i].tolist()))
    q_img = set(zip(q_idx.tolist(), ep.query_rot[i].tolist()))
    assert len(s_img) == ways * shots and len(q_img) == ways * queries
    assert not s_img & q_img  # support and query never share an image
    if rotation != "classes":
      assert not set(s_idx.tolist()) & set(q_idx.tolist())
    for part, idx, y, rot, k in (
        ("support", s_idx, ep.support_y[i], ep.support_rot[i], shots),
        ("query", q_idx, ep.query_y[i], ep.query_rot[i], queries)):
      np.testing.assert_array_equal(np.bincount(y, minlength=ways), [k] * ways)
      np.testing.assert_array_equal(y, getattr(tasks, f"{part}_y")[i])
      # every example of label j is an image of class j's base class
      np.testing.assert_array_equal(idx // E, base[y])
      # ... turned as the policy says, the same for the whole class
      np.testing.assert_array_equal(rot, ep.rotations[i][y])
      for n in range(len(idx)):
        turns = turns_of(x[part][i, n], flat[idx[n]])
        assert turns == rot[n]
        seen_turns.add(turns)
  assert seen_turns == ({0} if rotation == "none" else {0, 1, 2, 3})


def test_labels_are_shuffled_per_task(data):
  _, ep = sp.sample_tasks(jax.random.key(0), data, ways=3, shots=1, queries=1,
                          num_tasks=40, return_episodes=True)
  # class -> label assignment varies: the class given label 0 is not fixed
  assert len(set(np.asarray(ep.classes[:, 0]).tolist())) > 3
  # and with shuffle the label is not readable from the position
  assert len({tuple(r) for r in np.asarray(ep.support_y).tolist()}) > 1
  _, ordered = sp.sample_tasks(jax.random.key(0), data, ways=3, shots=2,
                               queries=1, num_tasks=5, shuffle=False,
                               return_episodes=True)
  np.testing.assert_array_equal(ordered.support_y,
                                np.tile([0, 0, 1, 1, 2, 2], (5, 1)))


def test_rotations_as_classes_multiplies_classes():
  d = sp.EpisodeData.from_dense(marked_images(c=2))
  _, ep = sp.sample_tasks(jax.random.key(1), d, ways=8, shots=1, queries=1,
                          num_tasks=3, rotation="classes", return_episodes=True)
  for row in np.asarray(ep.classes):
    assert sorted(row.tolist()) == list(range(8))
  with pytest.raises(ValueError, match="ways=9 is larger than the 8 classes"):
    sp.sample_tasks(jax.random.key(1), d, ways=9, shots=1, queries=1,
                    rotation="classes")
  with pytest.raises(ValueError, match="ways=3 is larger than the 2 classes"):
    sp.sample_tasks(jax.random.key(1), d, ways=3, shots=1, queries=1)


def test_seeds(data):
  kw = dict(ways=3, shots=1, queries=2, num_tasks=4, rotation="per_task")
  a = sp.sample_tasks(jax.random.key(7), data, **kw)
  b = sp.sample_tasks(jax.random.key(7), data, **kw)
  c = sp.sample_tasks(jax.random.key(8), data, **kw)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  assert not np.array_equal(a.support_x, c.support_x)
  # old-style uint32 keys work too
  sp.sample_tasks(jax.random.PRNGKey(0), data, **kw)


def test_jit_and_vmap(data):
  kw = dict(ways=3, shots=2, queries=2, num_tasks=2, rotation="per_task")
  fn = functools.partial(sp.sample_tasks, **kw)
  eager = fn(jax.random.key(0), data)
  jitted = jax.jit(fn)(jax.random.key(0), data)
  for u, v in zip(eager, jitted):
    np.testing.assert_array_equal(u, v)
  keys = jax.random.split(jax.random.key(1), 5)
  batched = jax.jit(jax.vmap(lambda k: fn(k, data)))(keys)
  assert batched.support_x.shape == (5, 2, 6, S, S, 1)
  one = fn(keys[3], data)
  for u, v in zip(batched, one):
    np.testing.assert_array_equal(u[3], v)
  # vmapped over the data too (e.g. several datasets of the same shape)
  two = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), data)
  both = jax.vmap(lambda d: fn(jax.random.key(0), d))(two)
  np.testing.assert_array_equal(both.query_x[1], eager.query_x)


def test_sampler_object_and_paired_test_tasks(data):
  s = sp.EpisodeSampler(data, ways=3, shots=1, queries=2, num_tasks=4,
                        rotation="per_task")
  direct = sp.sample_tasks(jax.random.key(5), data, ways=3, shots=1,
                           queries=2, num_tasks=4, rotation="per_task")
  np.testing.assert_array_equal(s(jax.random.key(5)).query_x, direct.query_x)
  big = list(s.test_tasks(seed=11, num_tasks=6, batch_size=6))
  small = list(s.test_tasks(seed=11, num_tasks=6, batch_size=4))
  assert [b.num_tasks for b in small] == [4, 2]
  cat = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *small)
  for u, v in zip(big[0], cat):
    np.testing.assert_array_equal(u, v)
  other = next(s.test_tasks(seed=12, num_tasks=6, batch_size=6))
  assert not np.array_equal(other.support_x, big[0].support_x)
  assert s.config()["num_classes"] == C
  # dense arrays / OmniglotData-like objects are converted
  s2 = sp.EpisodeSampler(marked_images(), ways=2, shots=1, queries=1)
  assert s2(jax.random.key(0)).support_x.shape == (1, 2, S, S, 1)


def test_uint8_images_are_scaled():
  x = np.full((3, 4, 2, 2, 3), 255, np.uint8)
  x[:, :, 0, 0] = 51
  t = sp.sample_tasks(jax.random.key(0), sp.EpisodeData.from_dense(x),
                      ways=2, shots=1, queries=1)
  assert t.support_x.dtype == jnp.float32
  assert float(t.support_x.max()) == 1.0
  np.testing.assert_allclose(np.asarray(t.support_x)[..., 0, 0, :], 0.2,
                             rtol=1e-6)


def test_ragged_classes_from_labels():
  counts = [3, 5, 8]
  labels = np.repeat([2, 0, 1], [8, 3, 5])  # unsorted input
  images = np.zeros((16, 2, 2, 1), np.float32)
  images[:, 0, 0, 0] = np.arange(16)  # remember the original position
  d = sp.EpisodeData.from_labels(images, labels)
  np.testing.assert_array_equal(d.counts, counts)
  assert (d.min_count, d.max_count) == (3, 8)
  tasks, ep = sp.sample_tasks(jax.random.key(0), d, ways=3, shots=2,
                              queries=1, num_tasks=30, return_episodes=True)
  x = np.asarray(tasks.support_x)[..., 0, 0, 0].astype(int)
  cls = np.asarray(ep.classes)
  y = np.asarray(tasks.support_y)
  # each support image carries its original label = the class of its label
  np.testing.assert_array_equal(labels[x], np.take_along_axis(cls, y, 1))
  used = set(np.asarray(ep.support_index).ravel().tolist())
  assert max(used) < 16 and len(used) > 10  # beyond the smallest class size
  with pytest.raises(ValueError, match="smallest class has only 3"):
    sp.sample_tasks(jax.random.key(0), d, ways=2, shots=2, queries=2)
  with pytest.raises(ValueError, match="have no images"):
    sp.EpisodeData.from_labels(images, labels, num_classes=4)
  with pytest.raises(ValueError, match="labels have shape"):
    sp.EpisodeData.from_labels(images, labels[:-1])


def test_bad_configurations(data):
  def sample(**kw):
    args = dict(ways=2, shots=1, queries=1)
    args.update(kw)
    return sp.sample_tasks(jax.random.key(0), data, **args)

  with pytest.raises(ValueError, match="ways=7 is larger than the 6 classes"):
    sample(ways=7)
  with pytest.raises(ValueError, match="ways must be at least 1"):
    sample(ways=0)
  with pytest.raises(ValueError, match="only 7 examples"):
    sample(shots=5, queries=3)
  with pytest.raises(ValueError, match="shots must be at least 1"):
    sample(shots=0)
  with pytest.raises(ValueError, match="queries must be at least 1"):
    sample(queries=0)
  with pytest.raises(ValueError, match="num_tasks must be at least 1"):
    sample(num_tasks=0)
  with pytest.raises(ValueError, match="unknown rotation policy"):
    sample(rotation="random")
  rect = sp.EpisodeData.from_dense(np.zeros((3, 4, 4, 6, 1), np.float32))
  with pytest.raises(ValueError, match="square images, got 4x6"):
    sp.sample_tasks(jax.random.key(0), rect, ways=2, shots=1, queries=1,
                    rotation="per_task")
  with pytest.raises(ValueError, match=r"\(classes, examples, H, W, C\)"):
    sp.EpisodeData.from_dense(np.zeros((3, 4, 4, 6), np.float32))
  with pytest.raises(ValueError, match="ways=7"):
    sp.EpisodeSampler(data, ways=7, shots=1, queries=1)


def test_real_omniglot_twenty_examples(real_omniglot):
  d = sp.EpisodeData.from_dense(real_omniglot.images[:50])
  t = sp.sample_tasks(jax.random.key(0), d, ways=20, shots=5, queries=15,
                      num_tasks=2, rotation="classes")
  assert t.support_x.shape == (2, 100, 28, 28, 1)
  with pytest.raises(ValueError, match="5 \\+ 16 = 21 .* only 20 examples"):
    sp.sample_tasks(jax.random.key(0), d, ways=5, shots=5, queries=16)


def test_tasks_plug_into_meta_step(data):
  from metajax.models import Conv4
  tiny = sp.EpisodeData.from_dense(
      np.random.default_rng(0).random((C, E, 4, 4, 1), np.float32))
  sampler = sp.EpisodeSampler(tiny, ways=3, shots=1, queries=2, num_tasks=2,
                              rotation="per_task")
  learner = metajax.MAML(Conv4(num_outputs=3, filters=2, blocks=1),
                         loss="cross_entropy", inner_lr=0.4, ways=3)
  tasks = sampler(jax.random.key(0))
  opt = optax.adam(1e-3)
  state = metajax.init_state(learner, opt, jax.random.key(1),
                             metajax.core.tasks.task_slice(tasks, 0))
  step = metajax.make_meta_step(learner, opt)
  state, metrics = step(state, tasks)
  state, metrics = step(state, sampler(jax.random.key(2)))
  assert int(state.step) == 2
  assert np.isfinite(float(metrics["loss"]))
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0
