"""Lake et al.'s (2015) one-shot classification benchmark.

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
import json
import re
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metajax.data.images import decode_image, resize_ink, to_ink
from metajax.evaluation import stats
from metajax.evaluation.harness import _jsonable

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
      try:
        text = read(label_file).decode("utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(f"{path}:{label_file} is not text ({e}); expected "
                         "'test train' pairs, one per line") from e
      pairs = [line.split() for line in text.splitlines() if line.strip()]
      if not pairs or any(len(p) != 2 for p in pairs):
        raise ValueError(f"{path}:{label_file}: expected 'test train' pairs")
      tests = sorted(p[0] for p in pairs)
      trains = sorted({p[1] for p in pairs})
      answer = dict(pairs)
      if len(tests) != len(set(tests)):
        raise ValueError(f"{path}:{label_file}: a test item is listed twice")

      def imgs(files):
        # Same decoding, ink convention and resize as the Omniglot loaders,
        # so a learner trained on them sees Lake's runs as it saw training.
        ink = [to_ink(decode_image(read(prefix + f), f"{path}:{f}"))
               for f in files]
        return np.stack([resize_ink(x, size, method) for x in ink])[..., None]

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


def learner_matcher(learner, params, *, steps: int | None = None,
                    model_state=None) -> Callable:
  """A matcher from a meta-learner: one 20-way 1-shot task per run.

  The run's training images are the support set (labels ``0..19``), the
  test images the queries; the scores are ``learner.predict`` outputs
  (logits) after ``learner.adapt`` with ``steps`` inner steps. The learner
  must produce at least 20 outputs and take images of the run's size.
  ``model_state`` (the trained ``MetaState.model_state``: running batch-norm
  statistics, Reptile's carried inner Adam state) is used as
  :func:`metajax.evaluate` uses it.
  """
  if model_state is not None:
    learner = learner.with_model_state(model_state)

  @jax.jit
  def scores(test, train):
    labels = jnp.arange(train.shape[0], dtype=jnp.int32)
    state = learner.adapt(params, train, labels, steps=steps)
    return learner.predict(params, state, test)

  return lambda test, train: np.asarray(scores(jnp.asarray(test),
                                               jnp.asarray(train)))
