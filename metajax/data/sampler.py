"""Episodic N-way K-shot sampling as a pure JAX function.

A task (Vinyals et al. 2016) draws ``N = ways`` distinct classes, then for
each class ``K = shots`` support and ``Q = queries`` query examples, all
distinct images. Class ``j`` of the task gets label ``j``; since the classes
come out in a uniformly random order, the class -> label assignment is a
fresh random permutation per task. With ``shuffle=True`` the example order
within the support and the query set is permuted too, so nothing can read
the label off the position.

Everything runs on device with ``jax.random``: the dataset is an
:class:`EpisodeData` pytree (images grouped by class, on the device), and
:func:`sample_tasks` is a pure function of ``(rng, data)`` with static
shapes, so it composes with ``jit``, ``vmap`` and a compiled meta-step, and
never waits on the host. Output is a :class:`metajax.Task` batch:

  support_x ``(T, N*K, H, W, C)`` float32, support_y ``(T, N*K)`` int32,
  query_x ``(T, N*Q, H, W, C)`` float32, query_y ``(T, N*Q)`` int32.

Integer images (uint8) are scaled to [0, 1]; float images pass unchanged.

Rotation policy (``rotation=``, one of :data:`ROTATIONS`):

* ``'none'``;
* ``'classes'``: each class at 0/90/180/270 degrees is a class of its own
  (ProtoNets, torchmeta): ``4 * C`` classes, effective class ``e`` is base
  class ``e // 4`` rotated by ``e % 4`` quarter turns (the order of the
  Vinyals split files). Two turns of one character may meet in a task, and
  then one drawing may appear in both (as a different, rotated image);
* ``'per_task'``: every class of a task is rotated by its own random multiple
  of 90 degrees, the same for all its examples (MAML, learn2learn).

Rotations are counter-clockwise quarter turns (``np.rot90`` on ``(H, W)``,
as PIL's ``rotate``); they need square images.

Paired evaluation: task ``i`` of :meth:`EpisodeSampler.test_tasks` comes from
``fold_in(key(seed), i)``, so every method evaluated with the same seed sees
exactly the same tasks, however they are batched. Threefry keys make this
identical across CPU and GPU.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metajax.core.tasks import Task, check_ways

ROTATIONS = ("none", "classes", "per_task")


@jax.tree_util.register_pytree_node_class
class EpisodeData:
  """Images grouped by class, ready for on-device sampling.

  Class ``c`` owns ``images[offsets[c] : offsets[c] + counts[c]]``.

  Attributes:
    images: ``(num_images, H, W, C)`` (uint8 or float).
    offsets: ``(num_classes,)`` int32 first image of each class.
    counts: ``(num_classes,)`` int32 images per class.
    max_count, min_count: static Python ints (largest/smallest class).
  """

  def __init__(self, images, offsets, counts, max_count: int,
               min_count: int):
    self.images = images
    self.offsets = offsets
    self.counts = counts
    self.max_count = int(max_count)
    self.min_count = int(min_count)

  def tree_flatten(self):
    return (self.images, self.offsets, self.counts), (self.max_count,
                                                      self.min_count)

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(*children, *aux)

  @property
  def num_classes(self) -> int:
    return int(self.offsets.shape[0])

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.images.shape[1:])

  @classmethod
  def from_dense(cls, images, *, device=None) -> "EpisodeData":
    """From ``(classes, examples, H, W, C)`` (e.g. ``OmniglotData.images``).

    Also accepts an object with an ``images`` attribute.
    """
    images = getattr(images, "images", images)
    shape = tuple(np.shape(images))
    if len(shape) != 5:
      raise ValueError(
          f"expected images of shape (classes, examples, H, W, C), got {shape}")
    c, e = shape[:2]
    if c == 0 or e == 0:
      raise ValueError(f"empty dataset: {c} classes x {e} examples")
    flat = jnp.reshape(jnp.asarray(images), (c * e,) + shape[2:])
    flat = jax.device_put(flat, device)
    return cls(flat, jnp.arange(c, dtype=jnp.int32) * e,
               jnp.full((c,), e, jnp.int32), e, e)

  @classmethod
  def from_labels(cls, images, labels, *, num_classes: int | None = None,
                  device=None) -> "EpisodeData":
    """From ``(num_images, H, W, C)`` images and ``(num_images,)`` class ids.

    Classes may have different sizes (tieredImageNet); ids must be in
    ``[0, num_classes)`` and every class must have at least one image.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 4:
      raise ValueError(
          f"expected images of shape (num_images, H, W, C), got {images.shape}")
    if labels.shape != images.shape[:1]:
      raise ValueError(
          f"labels have shape {labels.shape}, expected ({images.shape[0]},)")
    if labels.dtype.kind not in "iu":
      raise ValueError(f"labels must be integer class ids, got {labels.dtype}")
    if labels.size and labels.min() < 0:
      raise ValueError("labels must be >= 0")
    n = int(labels.max()) + 1 if num_classes is None else num_classes
    counts = np.bincount(labels, minlength=n)
    if len(counts) > n:
      raise ValueError(f"labels go up to {labels.max()} but num_classes={n}")
    if n == 0 or (counts == 0).any():
      raise ValueError(
          f"classes {np.flatnonzero(counts == 0)[:10].tolist()} have no images")
    order = np.argsort(labels, kind="stable")
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return cls(jax.device_put(images[order], device),
               jnp.asarray(offsets, jnp.int32), jnp.asarray(counts, jnp.int32),
               int(counts.max()), int(counts.min()))


class Episodes(NamedTuple):
  """Which images a task batch uses (leading axis ``T``; per task shapes).

  Attributes:
    classes: ``(N,)`` effective class ids (``4 * base + rotation`` for
      ``rotation='classes'``), in label order: class ``classes[j]`` is label j.
    rotations: ``(N,)`` quarter turns of each class.
    support_index, support_y, support_rot: ``(N*K,)`` flat image indices
      into ``EpisodeData.images``, labels and quarter turns.
    query_index, query_y, query_rot: ``(N*Q,)`` likewise.
  """
  classes: jax.Array
  rotations: jax.Array
  support_index: jax.Array
  support_y: jax.Array
  support_rot: jax.Array
  query_index: jax.Array
  query_y: jax.Array
  query_rot: jax.Array


def check_config(data: EpisodeData, *, ways: int, shots: int, queries: int,
                 rotation: str = "none", num_tasks: int = 1) -> None:
  """Raises ``ValueError`` naming the problem with a sampling configuration."""
  if rotation not in ROTATIONS:
    raise ValueError(f"unknown rotation policy {rotation!r}; choose from "
                     f"{ROTATIONS}")
  if shots < 1:
    raise ValueError(f"shots must be at least 1, got {shots}")
  if queries < 1:
    raise ValueError(f"queries must be at least 1, got {queries}")
  if num_tasks < 1:
    raise ValueError(f"num_tasks must be at least 1, got {num_tasks}")
  n = data.num_classes * (4 if rotation == "classes" else 1)
  check_ways(ways, n, "the dataset" + (" (rotations counted as classes)"
                                       if rotation == "classes" else ""))
  if shots + queries > data.min_count:
    raise ValueError(
        f"shots + queries = {shots} + {queries} = {shots + queries} images per "
        f"class, but the smallest class has only {data.min_count} examples")
  if rotation != "none":
    h, w = data.image_shape[:2]
    if h != w:
      raise ValueError(
          f"rotation={rotation!r} needs square images, got {h}x{w}")


def _draw_sizes(data: EpisodeData, ways: int, shots: int, queries: int,
                rotation: str) -> list[int]:
  n_eff = data.num_classes * (4 if rotation == "classes" else 1)
  return [n_eff, ways * data.max_count, ways, ways * shots, ways * queries]


def _one_episode(u, data: EpisodeData, ways: int, shots: int, queries: int,
                 rotation: str, shuffle: bool) -> Episodes:
  """The episode that the uniforms ``u`` (one task's draw) select."""
  # All randomness of a task is one vector of uniforms, sliced for each use:
  # every separate jax.random call is another threefry block for XLA to
  # compile (seconds each on CPU), and the sampler compiles per configuration.
  sizes = _draw_sizes(data, ways, shots, queries, rotation)
  m = data.max_count
  u_cls, u_ex, u_rot, u_s, u_q = jnp.split(u, np.cumsum(sizes)[:-1].tolist())
  # top_k of i.i.d. uniforms: a uniformly random subset in random order, so
  # the class -> label map is a fresh permutation every task.
  _, classes = jax.lax.top_k(u_cls, ways)
  classes = classes.astype(jnp.int32)
  if rotation == "classes":
    base, rot = classes // 4, classes % 4
  elif rotation == "per_task":
    base = classes
    rot = jnp.minimum(jnp.floor(u_rot * 4), 3).astype(jnp.int32)
  else:
    base, rot = classes, jnp.zeros((ways,), jnp.int32)
  # Distinct examples per class: the K+Q largest of uniforms over the
  # class's own images (positions past its count can never win).
  valid = jnp.arange(m)[None, :] < data.counts[base][:, None]
  _, pos = jax.lax.top_k(jnp.where(valid, u_ex.reshape(ways, m), -1.0),
                         shots + queries)
  idx = data.offsets[base][:, None] + pos.astype(jnp.int32)
  labels = jnp.arange(ways, dtype=jnp.int32)

  def part(cols, count, u_perm):
    index = cols.reshape(-1)
    y = jnp.repeat(labels, count)
    r = jnp.repeat(rot, count)
    if shuffle:  # argsort of uniforms: a uniformly random permutation
      p = jnp.argsort(u_perm)
      index, y, r = index[p], y[p], r[p]
    return index, y, r

  s = part(idx[:, :shots], shots, u_s)
  q = part(idx[:, shots:], queries, u_q)
  return Episodes(classes, rot, *s, *q)


_STATIC = ("ways", "shots", "queries", "rotation", "shuffle", "dtype")


def _episodes(keys, data, ways, shots, queries, rotation, shuffle,
              num_tasks=None):
  """One episode per key (``keys`` ``(T,)``), or ``num_tasks`` from one key."""
  total = sum(_draw_sizes(data, ways, shots, queries, rotation))
  if num_tasks is not None:  # one draw for the whole batch
    u = jax.random.uniform(keys, (num_tasks, total))
  else:
    u = jax.vmap(lambda k: jax.random.uniform(k, (total,)))(keys)
  return jax.vmap(lambda v: _one_episode(v, data, ways, shots, queries,
                                         rotation, shuffle))(u)


def episodes_from_keys(keys, data: EpisodeData, *, ways: int, shots: int,
                       queries: int, rotation: str = "none",
                       shuffle: bool = True) -> Episodes:
  """One episode per key: :class:`Episodes` with leading axis ``len(keys)``."""
  check_config(data, ways=ways, shots=shots, queries=queries,
               rotation=rotation)
  return _episodes_jit(keys, data, ways=ways, shots=shots, queries=queries,
                       rotation=rotation, shuffle=shuffle)


def sample_episodes(rng, data: EpisodeData, *, ways: int, shots: int,
                    queries: int, num_tasks: int = 1, rotation: str = "none",
                    shuffle: bool = True) -> Episodes:
  """``num_tasks`` episodes from one key."""
  return sample_tasks(rng, data, ways=ways, shots=shots, queries=queries,
                      num_tasks=num_tasks, rotation=rotation, shuffle=shuffle,
                      return_episodes=True)[1]


def rotate(x, k):
  """``x`` ``(M, H, W, C)`` turned by ``k`` ``(M,)`` quarter turns (CCW)."""
  turns = [x] + [jnp.rot90(x, i, axes=(1, 2)) for i in (1, 2, 3)]
  k = jnp.reshape(k, (-1,) + (1,) * (x.ndim - 1))
  out = turns[3]
  for i in (2, 1, 0):
    out = jnp.where(k == i, turns[i], out)
  return out


def to_float(x, dtype=jnp.float32):
  """Integer images scaled to [0, 1]; float images cast to ``dtype``."""
  if jnp.issubdtype(x.dtype, jnp.integer):
    return x.astype(dtype) / jnp.asarray(jnp.iinfo(x.dtype).max, dtype)
  return x.astype(dtype)


def gather_tasks(data: EpisodeData, episodes: Episodes, *,
                 rotate_images: bool = True, dtype=jnp.float32) -> Task:
  """The :class:`~metajax.Task` batch of ``episodes`` (any leading axes)."""
  def take(index, rot):
    lead = index.shape
    x = to_float(data.images[index.reshape(-1)], dtype)
    if rotate_images:
      x = rotate(x, rot.reshape(-1))
    return x.reshape(lead + x.shape[1:])

  return Task(take(episodes.support_index, episodes.support_rot),
              episodes.support_y,
              take(episodes.query_index, episodes.query_rot),
              episodes.query_y)


def sample_tasks(rng, data: EpisodeData, *, ways: int, shots: int,
                 queries: int, num_tasks: int = 1, rotation: str = "none",
                 shuffle: bool = True, dtype=jnp.float32,
                 return_episodes: bool = False):
  """A batch of ``num_tasks`` N-way K-shot tasks (pure; jit/vmap-able).

  Args:
    rng: a PRNG key.
    data: the :class:`EpisodeData` (on device).
    ways, shots, queries: ``N``, ``K``, ``Q``; static.
    num_tasks: ``T``; static.
    rotation: one of :data:`ROTATIONS`.
    shuffle: permute example order within support and query sets.
    return_episodes: also return the :class:`Episodes` (indices used).

  Returns:
    :class:`~metajax.Task` with support ``(T, N*K, H, W, C)`` / ``(T, N*K)``
    and query ``(T, N*Q, H, W, C)`` / ``(T, N*Q)``.

  Raises:
    ValueError: ``ways`` > classes, ``shots + queries`` > images per class,
      non-positive sizes, unknown rotation, rotation of non-square images.
  """
  check_config(data, ways=ways, shots=shots, queries=queries,
               rotation=rotation, num_tasks=num_tasks)
  tasks, ep = _tasks_jit(rng, data, num_tasks=num_tasks, ways=ways,
                         shots=shots, queries=queries, rotation=rotation,
                         shuffle=shuffle, dtype=dtype)
  return (tasks, ep) if return_episodes else tasks


def tasks_from_keys(keys, data: EpisodeData, *, ways: int, shots: int,
                    queries: int, rotation: str = "none", shuffle: bool = True,
                    dtype=jnp.float32) -> Task:
  """One task per key (task ``i`` depends only on ``keys[i]``)."""
  check_config(data, ways=ways, shots=shots, queries=queries,
               rotation=rotation)
  return _tasks_jit(keys, data, ways=ways, shots=shots, queries=queries,
                    rotation=rotation, shuffle=shuffle, dtype=dtype)[0]


def _tasks(keys, data, *, ways, shots, queries, rotation, shuffle, dtype,
           num_tasks=None):
  ep = _episodes(keys, data, ways, shots, queries, rotation, shuffle,
                 num_tasks)
  return gather_tasks(data, ep, rotate_images=rotation != "none",
                      dtype=dtype), ep


# Compiled once per configuration, so eager calls cost one XLA launch rather
# than one per primitive; inside a user's jit these simply inline.
_tasks_jit = jax.jit(_tasks, static_argnames=_STATIC + ("num_tasks",))
_episodes_jit = jax.jit(
    lambda keys, data, *, ways, shots, queries, rotation, shuffle: _episodes(
        keys, data, ways, shots, queries, rotation, shuffle),
    static_argnames=_STATIC[:-1])


def task_keys(seed: int, start: int, count: int):
  """Keys of tasks ``start .. start+count-1`` of the stream ``seed``."""
  return _task_keys(jnp.asarray(seed, jnp.uint32),
                    jnp.asarray(start, jnp.uint32), count=count)


@jax.jit(static_argnames=("count",))
def _task_keys(seed, start, *, count: int):
  base = jax.random.key(seed)
  return jax.vmap(lambda i: jax.random.fold_in(base, i))(
      start + jnp.arange(count, dtype=jnp.uint32))


@dataclasses.dataclass(frozen=True, eq=False)
class EpisodeSampler:
  """A configured, compiled task source over one :class:`EpisodeData`.

  ``sampler(rng)`` returns a :class:`~metajax.Task` batch of ``num_tasks``
  tasks (compiled once; the data is an argument, not a baked-in constant).
  For meta-training, call it inside or outside your jitted step; for
  evaluation use :meth:`test_tasks` (paired across methods by ``seed``).

  Attributes:
    data: the dataset; an ``OmniglotData`` or a 5-D array is converted with
      :meth:`EpisodeData.from_dense`.
    ways, shots, queries, num_tasks, rotation, shuffle: as in
      :func:`sample_tasks`.
  """
  data: EpisodeData
  ways: int
  shots: int
  queries: int
  num_tasks: int = 1
  rotation: str = "none"
  shuffle: bool = True

  def __post_init__(self):
    if not isinstance(self.data, EpisodeData):
      object.__setattr__(self, "data", EpisodeData.from_dense(self.data))
    check_config(self.data, ways=self.ways, shots=self.shots,
                 queries=self.queries, rotation=self.rotation,
                 num_tasks=self.num_tasks)

  def _kw(self) -> dict:
    return dict(ways=self.ways, shots=self.shots, queries=self.queries,
                rotation=self.rotation, shuffle=self.shuffle)

  def __call__(self, rng) -> Task:
    return sample_tasks(rng, self.data, num_tasks=self.num_tasks,
                        **self._kw())

  def from_keys(self, keys) -> Task:
    """One task per key (compiled per number of keys)."""
    return tasks_from_keys(keys, self.data, **self._kw())

  def test_tasks(self, seed: int, num_tasks: int, batch_size: int = 100
                 ) -> Iterator[Task]:
    """Batches of the fixed task stream ``seed`` (tasks ``0..num_tasks-1``).

    Every batch has ``batch_size`` tasks except possibly the last. Task ``i``
    is the same for every method and every ``batch_size``.
    """
    if num_tasks < 1 or batch_size < 1:
      raise ValueError(
          f"num_tasks and batch_size must be >= 1, got {num_tasks}, "
          f"{batch_size}")
    size = min(batch_size, num_tasks)
    for start in range(0, num_tasks, size):
      n = min(size, num_tasks - start)
      tasks = self.from_keys(task_keys(seed, start, size))
      # The last batch is drawn full size and cut: no recompile for it.
      yield tasks if n == size else jax.tree_util.tree_map(
          lambda a, n=n: a[:n], tasks)

  def config(self) -> dict:
    """The sampling configuration (for result files)."""
    return dict(ways=self.ways, shots=self.shots, queries=self.queries,
                rotation=self.rotation, shuffle=self.shuffle,
                num_classes=self.data.num_classes,
                image_shape=list(self.data.image_shape))


# ---------------------------------------------------------------------------
# batches of labelled images over all classes (supervised pretraining)
# ---------------------------------------------------------------------------
def num_labels(data: EpisodeData, rotation: str) -> int:
  """Classes a :class:`ClassBatchSampler` labels: ``4 * C`` with
  ``rotation='classes'``, else ``C``."""
  return data.num_classes * (4 if rotation == "classes" else 1)


def _class_batch(u, data: EpisodeData, batch_size: int, rotation: str):
  """``(image index, label, quarter turns)`` ``(B,)`` from uniforms ``u``."""
  u_cls, u_ex, u_rot = u[:batch_size], u[batch_size:2 * batch_size], u[2 * batch_size:]
  n = num_labels(data, rotation)
  label = jnp.minimum(jnp.floor(u_cls * n), n - 1).astype(jnp.int32)
  if rotation == "classes":
    base, rot = label // 4, label % 4
  elif rotation == "per_task":  # an augmentation: each image its own turn
    base = label
    rot = jnp.minimum(jnp.floor(u_rot * 4), 3).astype(jnp.int32)
  else:
    base, rot = label, jnp.zeros_like(label)
  pos = jnp.minimum(jnp.floor(u_ex * data.counts[base]), data.counts[base] - 1)
  return data.offsets[base] + pos.astype(jnp.int32), label, rot


@jax.jit(static_argnames=("batch_size", "num_tasks", "rotation", "dtype"))
def _class_batches(rng, data, *, batch_size, num_tasks, rotation, dtype):
  u = jax.random.uniform(rng, (num_tasks, 3 * batch_size))
  index, label, rot = jax.vmap(
      lambda v: _class_batch(v, data, batch_size, rotation))(u)
  x = to_float(data.images[index.reshape(-1)], dtype)
  if rotation != "none":
    x = rotate(x, rot.reshape(-1))
  x = x.reshape((num_tasks, batch_size) + x.shape[1:])
  half = batch_size // 2
  return Task(x[:, :half], label[:, :half], x[:, half:], label[:, half:])


@dataclasses.dataclass(frozen=True, eq=False)
class ClassBatchSampler:
  """Batches of labelled images drawn over all classes: the pretraining data
  of the transfer baselines (:mod:`metajax.algorithms.transfer`), a sampler
  over classes rather than episodes.

  ``sampler(rng)`` returns a :class:`~metajax.Task` batch of ``num_tasks``
  "tasks", each one minibatch of ``batch_size`` images: every image draws
  its class uniformly, then one of the class's images uniformly (with
  replacement across the batch; Omniglot's classes are all of 20 images, so
  this is uniform over images too). Labels are *global* class ids in
  ``[0, num_labels)``: the base class, or ``4 * base + quarter turns`` with
  ``rotation='classes'`` (each rotation a class, as the episodes); with
  ``'per_task'`` every image gets its own random turn and keeps its class
  (an augmentation). The minibatch is split in two halves, ``support`` and
  ``query``, only so it fits the Task layout: a transfer learner's
  pretraining loss reads both as one batch. Pure in ``rng`` and compiled
  once, like :class:`EpisodeSampler`.

  Attributes:
    data: the dataset (converted as in :class:`EpisodeSampler`).
    batch_size: images per minibatch (at least 2).
    num_tasks: minibatches per call (the leading task axis).
    rotation: one of :data:`ROTATIONS`.
  """
  data: EpisodeData
  batch_size: int
  num_tasks: int = 1
  rotation: str = "none"

  def __post_init__(self):
    if not isinstance(self.data, EpisodeData):
      object.__setattr__(self, "data", EpisodeData.from_dense(self.data))
    if self.rotation not in ROTATIONS:
      raise ValueError(f"unknown rotation policy {self.rotation!r}; choose "
                       f"from {ROTATIONS}")
    if isinstance(self.batch_size, bool) or not isinstance(
        self.batch_size, (int, np.integer)) or self.batch_size < 2:
      raise ValueError(f"batch_size must be an integer >= 2, got "
                       f"{self.batch_size!r}")
    if self.num_tasks < 1:
      raise ValueError(f"num_tasks must be at least 1, got {self.num_tasks}")
    if self.rotation != "none":
      h, w = self.data.image_shape[:2]
      if h != w:
        raise ValueError(
            f"rotation={self.rotation!r} needs square images, got {h}x{w}")

  @property
  def num_labels(self) -> int:
    """The number of global classes (the pretraining classifier's width)."""
    return num_labels(self.data, self.rotation)

  def __call__(self, rng) -> Task:
    return _class_batches(rng, self.data, batch_size=int(self.batch_size),
                          num_tasks=self.num_tasks, rotation=self.rotation,
                          dtype=jnp.float32)

  def config(self) -> dict:
    """The sampling configuration (for result files)."""
    return dict(kind="class_batches", batch_size=int(self.batch_size),
                num_tasks=self.num_tasks, rotation=self.rotation,
                num_labels=self.num_labels,
                num_classes=self.data.num_classes,
                image_shape=list(self.data.image_shape))
