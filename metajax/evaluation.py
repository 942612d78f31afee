"""Meta-test evaluation: many held-out tasks, a 95% interval, JSON results.

:func:`evaluate` runs ``learner.evaluate(params, task, steps=...)`` on every
test task (``jax.lax.map`` or ``vmap`` over tasks under one ``jit``) and
reports the mean query accuracy (or MSE for regression) over ``n`` tasks
(default 600, as in MAML and ProtoNets) with the 95% confidence half-width

    ci95 = 1.96 * sd / sqrt(n)      (sd over tasks, ddof = 0),

see :func:`metajax.stats.mean_ci95`, plus the same summary after every inner
step (the adaptation curve). Test tasks come from a fixed seed (task ``i``
from ``fold_in(key(seed), i)``), so two methods evaluated with the same seed
see the same tasks and :func:`compare` can report the paired difference.

:func:`lake_one_shot` is Lake et al.'s (2015) original benchmark: 20 runs of
20-way one-shot classification of evaluation-set characters
(``omniglot/all_runs.zip``). Each run has 20 training images (one per class)
and 20 test images; a *matcher* scores every test image against every
training image and each test image goes to its best match. The error rate
per run and its mean over runs are reported (Lake et al.'s humans: 4.5%;
their modified-Hausdorff baseline, :func:`modified_hausdorff_matcher`,
38.8%).
"""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from metajax import stats
from metajax import task_map as task_map_lib
from metajax.tasks import Task, check_tasks

DEFAULT_NUM_TASKS = 600


# -- results -------------------------------------------------------------------
def _summary(values: np.ndarray) -> dict:
  mean, ci = stats.mean_ci95(values, axis=0)
  return {"mean": np.asarray(mean).tolist(), "ci95": np.asarray(ci).tolist()}


@dataclasses.dataclass
class EvalResult:
  """Summary of a meta-test run.

  Attributes:
    metric: the headline metric (``'accuracy'`` or ``'loss'``).
    mean, ci95: its mean over tasks after the last inner step, and the 95%
      half-width ``1.96 sd / sqrt(n)``.
    num_tasks: ``n``.
    steps: inner steps at test time (``None``: the learner's default).
    curves: per metric, ``{'mean': [...], 'ci95': [...]}`` after 0, 1, ...,
      ``steps`` inner steps (one entry when the learner reports no curve).
    per_task: ``(n, L)`` per task values of every metric (``L`` = curve
      length), for paired comparisons.
    config: anything describing the run (learner, sampler, seed).
  """
  metric: str
  mean: float
  ci95: float
  num_tasks: int
  steps: int | None
  curves: dict
  per_task: dict
  config: dict

  def to_dict(self, per_task: bool = False) -> dict:
    d = {"metric": self.metric, "mean": self.mean, "ci95": self.ci95,
         "num_tasks": self.num_tasks, "steps": self.steps,
         "curves": self.curves, "config": self.config}
    if per_task:
      d["per_task"] = {k: np.asarray(v).tolist()
                       for k, v in self.per_task.items()}
    return d

  def to_json(self, path=None, *, per_task: bool = False) -> str:
    """JSON text of :meth:`to_dict`; also written to ``path`` if given."""
    text = json.dumps(self.to_dict(per_task), indent=2, default=_jsonable)
    if path is not None:
      Path(path).write_text(text + "\n")
    return text

  def __str__(self) -> str:
    if self.metric == "accuracy":
      return (f"accuracy {100 * self.mean:.2f}% +- {100 * self.ci95:.2f}% "
              f"(95% CI, {self.num_tasks} tasks)")
    return (f"{self.metric} {self.mean:.4g} +- {self.ci95:.2g} "
            f"(95% CI, {self.num_tasks} tasks)")


def _jsonable(o):
  if isinstance(o, (np.generic,)):
    return o.item()
  if isinstance(o, (np.ndarray, jax.Array)):
    return np.asarray(o).tolist()
  return str(o)


# -- the harness ---------------------------------------------------------------
def _task_batches(tasks, num_tasks: int, seed: int, batch_size: int):
  """Yields ``Task`` batches from a sampler, a ``Task`` or ``fn(rng, n)``."""
  if isinstance(tasks, Task):
    for start in range(0, tasks.num_tasks, batch_size):
      yield jax.tree_util.tree_map(lambda a: a[start:start + batch_size], tasks)
    return
  if hasattr(tasks, "test_tasks"):  # metajax.data.sampler.EpisodeSampler
    yield from tasks.test_tasks(seed, num_tasks, batch_size)
    return
  if callable(tasks):
    base = jax.random.key(seed)
    for b, start in enumerate(range(0, num_tasks, batch_size)):
      yield tasks(jax.random.fold_in(base, b),
                  min(batch_size, num_tasks - start))
    return
  raise ValueError(
      "tasks must be a metajax.Task batch, an EpisodeSampler or a function "
      f"(rng, n) -> Task; got {type(tasks).__name__}")


def _pad(tasks: Task, size: int) -> Task:
  """Pads a batch to ``size`` tasks by repeating task 0 (avoids a recompile)."""
  n = tasks.num_tasks
  if n == size:
    return tasks
  return jax.tree_util.tree_map(
      lambda a: jnp.concatenate([a, jnp.repeat(a[:1], size - n, axis=0)]),
      tasks)


def make_evaluator(learner, *, steps: int | None = None,
                   task_map: str = "map", chunk_size: int | None = None
                   ) -> Callable[[Any, Task], dict]:
  """``jit(params, tasks) -> metrics``: ``learner.evaluate`` mapped over tasks.

  Each metric comes back as ``(T,)`` or ``(T, steps + 1)`` (a curve over
  inner steps, for learners that report one). Cached per (hashable) learner
  and settings, so evaluating checkpoint after checkpoint compiles once.
  """
  try:
    return _evaluator(learner, steps, task_map, chunk_size)
  except TypeError:  # an unhashable learner: build a fresh one
    return _evaluator.__wrapped__(learner, steps, task_map, chunk_size)


@functools.lru_cache(maxsize=32)
def _evaluator(learner, steps, task_map, chunk_size):
  if task_map not in task_map_lib.METHODS:
    raise ValueError(f"unknown task mapping {task_map!r}; choose one of "
                     f"{task_map_lib.METHODS}")

  def run(params, tasks):
    return task_map_lib.map_tasks(
        lambda t: learner.evaluate(params, t, steps=steps), tasks,
        method=task_map, chunk_size=chunk_size)

  return jax.jit(run)


def evaluate(learner, params, tasks, *, num_tasks: int = DEFAULT_NUM_TASKS,
             seed: int = 0, steps: int | None = None, batch_size: int = 100,
             task_map: str = "map", chunk_size: int | None = None,
             metric: str | None = None, config: dict | None = None,
             check: bool = True) -> EvalResult:
  """Meta-test accuracy (or loss) over ``num_tasks`` tasks with a 95% CI.

  Args:
    learner: a :class:`metajax.Learner` (anything with ``evaluate``).
    params: its trained meta-parameters.
    tasks: where test tasks come from:
      an :class:`~metajax.data.sampler.EpisodeSampler` (task ``i`` is drawn
      from ``fold_in(key(seed), i)``: paired across methods and batch
      sizes); a ``Task`` batch (all its tasks are used, ``num_tasks`` is
      ignored); or a function ``(rng, n) -> Task`` such as
      ``partial(sinusoid.sample_tasks, support=10, query=10)`` (batch ``b``
      gets ``fold_in(key(seed), b)``, so keep ``batch_size`` fixed to pair).
    num_tasks: number of test tasks ``n``.
    seed: the test-task stream.
    steps: inner steps at test time (``None``: the learner's default).
    batch_size: tasks per compiled call (the last batch is padded).
    task_map, chunk_size: how tasks are mapped, see :mod:`metajax.task_map`
      (``'map'`` = ``lax.map``, memory of one task at a time).
    metric: headline metric; default ``'accuracy'`` if reported, else
      ``'loss'`` (MSE for regression learners).
    config: extra entries for ``EvalResult.config``.
    check: validate the first batch with ``learner.check``.

  Returns:
    An :class:`EvalResult` (``.to_json()`` for a results file).

  Raises:
    ValueError: bad sizes, unknown metric, malformed tasks.
  """
  if num_tasks < 1:
    raise ValueError(f"num_tasks must be at least 1, got {num_tasks}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be at least 1, got {batch_size}")
  if isinstance(tasks, Task):
    check_tasks(tasks)
    num_tasks = tasks.num_tasks
  run = make_evaluator(learner, steps=steps, task_map=task_map,
                       chunk_size=chunk_size)
  size = min(batch_size, num_tasks)  # every call compiled for this many
  chunks: dict[str, list] = {}
  total = 0
  for i, batch in enumerate(_task_batches(tasks, num_tasks, seed, batch_size)):
    if check and i == 0:
      if hasattr(learner, "check"):
        learner.check(batch)
      else:
        check_tasks(batch)
    n = batch.num_tasks
    if n > size:
      raise ValueError(f"the task source returned {n} tasks, asked for {size}")
    out = jax.device_get(run(params, _pad(batch, size)))
    for k, v in out.items():
      v = np.asarray(v, np.float64)[:n]
      chunks.setdefault(k, []).append(v.reshape(n, -1))
    total += n
  per_task = {k: np.concatenate(v) for k, v in chunks.items()}
  if metric is None:
    metric = "accuracy" if "accuracy" in per_task else "loss"
  if metric not in per_task:
    raise ValueError(f"metric {metric!r} not reported by the learner; it "
                     f"reports {sorted(per_task)}")
  mean, ci = stats.mean_ci95(per_task[metric][:, -1])
  curve_len = per_task[metric].shape[1]
  if steps is None and curve_len > 1:
    steps = curve_len - 1
  cfg = {"learner": type(learner).__name__, "seed": seed,
         "task_map": task_map, "batch_size": batch_size}
  if hasattr(tasks, "config"):
    cfg["sampler"] = tasks.config()
  cfg.update(config or {})
  return EvalResult(
      metric=metric, mean=float(mean), ci95=float(ci), num_tasks=total,
      steps=steps, curves={k: _summary(v) for k, v in per_task.items()},
      per_task=per_task, config=cfg)


def compare(a: EvalResult, b: EvalResult, metric: str | None = None) -> dict:
  """Paired difference ``a - b`` over the same test tasks (mean, ci95).

  Valid when both were evaluated on the same task stream (same seed, same
  sampler); the paired interval is usually much tighter than the two
  separate ones.
  """
  metric = metric or a.metric
  if a.num_tasks != b.num_tasks:
    raise ValueError(
        f"results cover {a.num_tasks} and {b.num_tasks} tasks; a paired "
        "comparison needs the same tasks")
  if a.config.get("seed") != b.config.get("seed"):
    raise ValueError(
        f"results use different task seeds ({a.config.get('seed')} vs "
        f"{b.config.get('seed')}); a paired comparison needs the same tasks")
  d = a.per_task[metric][:, -1] - b.per_task[metric][:, -1]
  mean, ci = stats.mean_ci95(d)
  return {"metric": metric, "mean_difference": float(mean),
          "ci95": float(ci), "num_tasks": int(d.shape[0])}


# -- Lake's 20-way one-shot benchmark ------------------------------------------
LAKE_RUNS = 20
LAKE_WAYS = 20
_LABELS = re.compile(r"(?:^|/)(run\d+)/class_labels\.txt$")


class LakeRun(NamedTuple):
  """One run of Lake's one-shot benchmark.

  Attributes:
    name: ``'run01'`` ...
    train: ``(20, H, W, 1)`` float32 (ink = 1), ``training/class01..20``.
    test: ``(20, H, W, 1)``, ``test/item01..20``.
    answers: ``(20,)`` index into ``train`` of each test item's class.
  """
  name: str
  train: np.ndarray
  test: np.ndarray
  answers: np.ndarray


@dataclasses.dataclass
class LakeResult:
  """Error rates (percent) per run, their mean and 95% half-width."""
  errors: dict
  mean_error: float
  ci95: float
  config: dict

  def to_dict(self) -> dict:
    return {"benchmark": "lake2015_20way_one_shot", "errors": self.errors,
            "mean_error": self.mean_error, "ci95": self.ci95,
            "config": self.config}

  def to_json(self, path=None) -> str:
    text = json.dumps(self.to_dict(), indent=2, default=_jsonable)
    if path is not None:
      Path(path).write_text(text + "\n")
    return text

  def __str__(self) -> str:
    return (f"Lake 20-way one-shot: {self.mean_error:.2f}% error +- "
            f"{self.ci95:.2f} over {len(self.errors)} runs")


def _read_image(data: bytes, where: str, size, method: str) -> np.ndarray:
  from metajax.data.omniglot import resize  # shared resize (jax semantics)
  try:
    with Image.open(io.BytesIO(data)) as im:
      gray = np.asarray(im.convert("L"), np.float32)
  except Exception as e:
    raise ValueError(f"{where} is not a readable image ({e})") from e
  ink = 1.0 - gray / 255.0
  return np.clip(resize(ink, size, method=method), 0.0, 1.0)[..., None]


def load_lake_runs(path=None, *, data_dir=None, size=None,
                   method: str = "linear") -> list[LakeRun]:
  """The 20 runs of ``all_runs.zip`` (or its unzipped folder).

  ``class_labels.txt`` of each run pairs ``runNN/test/itemMM.png`` with the
  ``runNN/training/classKK.png`` of the same character, one pair per line.

  Args:
    path: the zip or folder; default ``<data_dir>/omniglot/all_runs.zip``.
    data_dir: data root (default ``$METAJAX_DATA_DIR``) when ``path`` is None.
    size: resize the 105x105 images (``None`` keeps them).

  Raises:
    FileNotFoundError / ValueError: missing, corrupt or inconsistent files.
  """
  from metajax.data import datadir as dd
  if path is None:
    root = dd.dataset_dir(data_dir, "omniglot", "omniglot_runs")
    cands = [root / "all_runs.zip", root / "all_runs"]
    path = dd.first_existing(cands)
    if path is None:
      raise dd.missing_files_error("omniglot_runs", cands)
  path = Path(path)
  if path.is_dir():
    names = [p.relative_to(path).as_posix() for p in path.rglob("*")
             if p.is_file()]
    read = lambda n: (path / n).read_bytes()  # noqa: E731
    zf = None
  elif path.is_file():
    zf = dd.open_zip(path)
    names = zf.namelist()
    read = lambda n: dd.read_zip_member(zf, n, path)  # noqa: E731
  else:
    raise dd.missing_files_error("omniglot_runs", [path])
  try:
    runs = []
    for label_file in sorted(n for n in names if _LABELS.search(n)):
      run = _LABELS.search(label_file).group(1)
      prefix = label_file[:label_file.rindex(run)]
      pairs = [line.split() for line in
               read(label_file).decode().splitlines() if line.strip()]
      if any(len(p) != 2 for p in pairs):
        raise ValueError(f"{path}:{label_file}: expected 'test train' pairs")
      tests = sorted(p[0] for p in pairs)
      trains = sorted({p[1] for p in pairs})
      answer = dict(pairs)
      if len(tests) != len(set(tests)):
        raise ValueError(f"{path}:{label_file}: a test item is listed twice")

      def imgs(files):
        return np.stack([_read_image(read(prefix + f), f"{path}:{f}", size,
                                     method) for f in files])

      runs.append(LakeRun(
          run, imgs(trains), imgs(tests),
          np.array([trains.index(answer[t]) for t in tests], np.int64)))
  except KeyError as e:
    raise ValueError(f"{path}: file {e} named in class_labels.txt is missing"
                     ) from e
  finally:
    if zf is not None:
      zf.close()
  if not runs:
    raise ValueError(f"{path} holds no runNN/class_labels.txt")
  return runs


def lake_one_shot(matcher: Callable, runs=None, *, kind: str = "score",
                  data_dir=None, size=None, config: dict | None = None
                  ) -> LakeResult:
  """Error rate of ``matcher`` on Lake's 20-way one-shot runs.

  Args:
    matcher: ``matcher(test, train) -> (n_test, n_train)`` scores, with
      ``test``/``train`` the ``(20, H, W, 1)`` images of a run.
    runs: from :func:`load_lake_runs` (default: loaded from ``data_dir``
      at ``size``).
    kind: ``'score'`` (higher = same class) or ``'cost'`` (lower = same).

  Returns:
    :class:`LakeResult`: per run ``100 * mean(prediction != answer)``, the
    mean over runs and its 95% half-width.
  """
  if kind not in ("score", "cost"):
    raise ValueError(f"kind must be 'score' or 'cost', got {kind!r}")
  if runs is None:
    runs = load_lake_runs(data_dir=data_dir, size=size)
  errors = {}
  for run in runs:
    s = np.asarray(matcher(run.test, run.train), np.float64)
    want = (len(run.test), len(run.train))
    if s.shape != want:
      raise ValueError(
          f"matcher returned shape {s.shape} for {run.name}; expected "
          f"(n_test, n_train) = {want}")
    pred = s.argmax(1) if kind == "score" else s.argmin(1)
    errors[run.name] = float(100.0 * np.mean(pred != run.answers))
  mean, ci = stats.mean_ci95(np.array(list(errors.values())))
  return LakeResult(errors, float(mean), float(ci),
                    {"kind": kind, "runs": len(errors), **(config or {})})


def modified_hausdorff_matcher(test, train) -> np.ndarray:
  """Lake et al.'s baseline cost: modified Hausdorff distance of ink pixels.

  Each image becomes the set of its ink pixel coordinates (ink > 0.5),
  centred on their mean; the cost of sets ``A``, ``B`` is (Dubuisson & Jain
  1994) ``max(mean_a min_b |a - b|, mean_b min_a |a - b|)``. Use with
  ``kind='cost'``. Returns ``(n_test, n_train)``.
  """
  def points(img):
    p = np.argwhere(np.asarray(img)[..., 0] > 0.5).astype(np.float64)
    if not len(p):
      raise ValueError("an image has no ink pixels")
    return p - p.mean(0)

  a_pts = [points(x) for x in test]
  b_pts = [points(x) for x in train]
  return np.maximum(_mean_nearest(a_pts, b_pts), _mean_nearest(b_pts, a_pts).T)


def _mean_nearest(src, dst) -> np.ndarray:
  """``out[i, j]`` = mean over points of ``src[i]`` of the distance to the
  nearest point of ``dst[j]``."""
  sizes = np.array([len(p) for p in src])
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  allp = np.concatenate(src)
  out = np.empty((len(src), len(dst)))
  try:  # one nearest-neighbour query per target set: fast and exact
    from scipy.spatial import cKDTree
    for j, q in enumerate(dst):
      d, _ = cKDTree(q).query(allp)
      out[:, j] = np.add.reduceat(d, starts) / sizes
  except ImportError:  # scipy is optional: exact all-pairs distances
    for j, q in enumerate(dst):
      for i, p in enumerate(src):
        d2 = (p * p).sum(1)[:, None] + (q * q).sum(1)[None] - 2 * p @ q.T
        out[i, j] = np.sqrt(np.maximum(d2, 0.0).min(1)).mean()
  return out


def learner_matcher(learner, params, *, steps: int | None = None) -> Callable:
  """A matcher from a meta-learner: one 20-way 1-shot task per run.

  The run's training images are the support set (labels ``0..19``), the
  test images the queries; the scores are ``learner.predict`` outputs
  (logits) after ``learner.adapt`` with ``steps`` inner steps. The learner
  must produce at least 20 outputs and take images of the run's size.
  """
  @jax.jit
  def scores(test, train):
    labels = jnp.arange(train.shape[0], dtype=jnp.int32)
    state = learner.adapt(params, train, labels, steps=steps)
    return learner.predict(params, state, test)

  return lambda test, train: np.asarray(scores(jnp.asarray(test),
                                               jnp.asarray(train)))
