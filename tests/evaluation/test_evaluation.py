"""Evaluation harness (mean +- 95% CI over test tasks) and Lake's benchmark."""
from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import metajax
from metajax import evaluation as ev
from metajax.core import losses
from metajax.data import sampler as sp
from metajax.data import sinusoid


class AlwaysZero(metajax.Learner):
  """Predicts class 0 for every query: accuracy = share of label 0."""
  ways = 2

  def init(self, rng, task):
    return {}

  def adapt(self, params, support_x, support_y, *, steps=None):
    return None

  def predict(self, params, state, x):
    return jnp.zeros((x.shape[0], 2)).at[:, 0].set(1.0)

  def task_loss(self, params, task):
    logits = self.predict(params, None, task.query_x)
    loss = losses.cross_entropy(logits, task.query_y)
    return loss, {"loss": loss, "accuracy": losses.accuracy(logits,
                                                           task.query_y)}


class Ramp(AlwaysZero):
  """Reports a curve: accuracy after step s is s / steps of AlwaysZero's."""

  def evaluate(self, params, task, *, steps=None):
    steps = 4 if steps is None else steps
    _, m = self.task_loss(params, task)
    frac = jnp.arange(steps + 1) / steps
    return {"accuracy": frac * m["accuracy"], "loss": (1 - frac) * m["loss"]}


@dataclasses.dataclass(frozen=True, eq=False)
class PixelPrototypes(metajax.Learner):
  """Nearest class mean in pixel space (a parameter-free ProtoNet)."""
  ways: int = 3

  def init(self, rng, task):
    return {"scale": jnp.ones(())}

  def adapt(self, params, support_x, support_y, *, steps=None):
    onehot = jax.nn.one_hot(support_y, self.ways)
    flat = support_x.reshape(support_x.shape[0], -1)
    return (onehot.T @ flat) / onehot.sum(0)[:, None]

  def predict(self, params, protos, x):
    flat = x.reshape(x.shape[0], -1)
    return -params["scale"] * ((flat[:, None] - protos[None]) ** 2).sum(-1)

  def task_loss(self, params, task):
    protos = self.adapt(params, task.support_x, task.support_y)
    logits = self.predict(params, protos, task.query_x)
    loss = losses.cross_entropy(logits, task.query_y)
    return loss, {"loss": loss, "accuracy": losses.accuracy(logits,
                                                           task.query_y)}


def label_tasks(query_labels) -> metajax.Task:
  y = jnp.asarray(query_labels, jnp.int32)
  t, q = y.shape
  return metajax.Task(jnp.zeros((t, 2, 1)), jnp.tile(jnp.arange(2), (t, 1)),
                      jnp.zeros((t, q, 1)), y)


def test_ci_matches_hand_computation(tmp_path):
  tasks = label_tasks([[0, 0], [0, 1], [1, 0], [1, 1]])  # acc 1, .5, .5, 0
  r = ev.evaluate(AlwaysZero(), {}, tasks, batch_size=3)
  # mean 0.5; sd (ddof 0) = sqrt((0.25 + 0 + 0 + 0.25) / 4) = sqrt(0.125)
  assert r.metric == "accuracy" and r.num_tasks == 4
  assert r.mean == pytest.approx(0.5, abs=1e-12)
  assert r.ci95 == pytest.approx(1.96 * math.sqrt(0.125) / math.sqrt(4),
                                 abs=1e-9)
  np.testing.assert_allclose(r.per_task["accuracy"][:, 0], [1, .5, .5, 0])
  assert r.curves["accuracy"]["mean"] == [pytest.approx(0.5)]
  # JSON result file
  text = r.to_json(tmp_path / "r.json", per_task=True)
  back = json.loads((tmp_path / "r.json").read_text())
  assert back == json.loads(text)
  assert back["mean"] == pytest.approx(0.5) and back["num_tasks"] == 4
  assert back["config"]["learner"] == "AlwaysZero"
  assert back["per_task"]["accuracy"] == [[1.0], [0.5], [0.5], [0.0]]
  assert "50.00% +- 34.65%" in str(r)
  # the loss as headline metric
  lr = ev.evaluate(AlwaysZero(), {}, tasks, metric="loss")
  assert lr.metric == "loss" and lr.mean > 0


def test_curve_over_inner_steps():
  tasks = label_tasks([[0, 0], [0, 1], [1, 1]])  # accuracies 1, .5, 0
  r = ev.evaluate(Ramp(), {}, tasks, steps=2)
  assert r.steps == 2
  np.testing.assert_allclose(r.curves["accuracy"]["mean"], [0, 0.25, 0.5])
  sd_last = math.sqrt(((1 - .5) ** 2 + 0 + (0 - .5) ** 2) / 3)
  np.testing.assert_allclose(r.curves["accuracy"]["ci95"],
                             [0, 1.96 * sd_last / 2 / math.sqrt(3),
                              1.96 * sd_last / math.sqrt(3)])
  assert r.mean == pytest.approx(0.5)
  assert ev.evaluate(Ramp(), {}, tasks).steps == 4  # the learner's default
  # one compiled evaluator per learner and settings (checkpoints reuse it)
  learner = Ramp()
  assert ev.make_evaluator(learner, steps=2) is ev.make_evaluator(learner,
                                                                  steps=2)
  assert ev.make_evaluator(learner, steps=3) is not ev.make_evaluator(
      learner, steps=2)

  class Unhashable(Ramp):
    __hash__ = None

  assert ev.evaluate(Unhashable(), {}, tasks, steps=2).mean == pytest.approx(
      0.5)


def test_sampler_tasks_are_paired_across_batch_sizes():
  rng = np.random.default_rng(0)
  data = sp.EpisodeData.from_dense(rng.random((8, 6, 3, 3, 1), np.float32))
  sampler = sp.EpisodeSampler(data, ways=3, shots=1, queries=2)
  learner = PixelPrototypes(ways=3)
  params = {"scale": jnp.ones(())}
  a = ev.evaluate(learner, params, sampler, num_tasks=10, seed=4,
                  batch_size=4)  # 4 + 4 + 2 (padded)
  b = ev.evaluate(learner, params, sampler, num_tasks=10, seed=4,
                  batch_size=10, task_map="vmap")
  np.testing.assert_array_equal(a.per_task["accuracy"], b.per_task["accuracy"])
  assert a.num_tasks == 10 and a.config["sampler"]["ways"] == 3
  assert 1 / 3 < a.mean <= 1.0  # better than chance on these tasks
  d = ev.compare(a, b)
  assert d["mean_difference"] == 0.0 and d["ci95"] == 0.0
  other = ev.evaluate(learner, params, sampler, num_tasks=10, seed=5,
                      batch_size=10, task_map="vmap")
  assert not np.array_equal(other.per_task["accuracy"],
                            a.per_task["accuracy"])
  with pytest.raises(ValueError, match="different task seeds"):
    ev.compare(a, other)
  # the paired difference of a worse learner is negative
  worse = ev.evaluate(learner, {"scale": -jnp.ones(())}, sampler,
                      num_tasks=10, seed=4, batch_size=10, task_map="vmap")
  assert ev.compare(worse, a)["mean_difference"] < 0


def test_maml_regression_mse_curve():
  from metajax.models import MLP
  learner = metajax.MAML(MLP(hidden=(8,)), inner_lr=0.01)
  task = sinusoid.sample_tasks(jax.random.key(0), 1, 5, 5)
  params = learner.init(jax.random.key(1), metajax.core.tasks.task_slice(task, 0))
  source = functools.partial(sinusoid.sample_tasks, support=5, query=5)
  r = ev.evaluate(learner, params, source, num_tasks=7, batch_size=4,
                  steps=3)
  assert r.metric == "loss" and r.num_tasks == 7
  assert len(r.curves["loss"]["mean"]) == 4  # steps 0..3
  # the harness matches a direct per-task loop
  want = []
  base = jax.random.key(0)
  one = jax.jit(functools.partial(learner.evaluate, steps=3))
  for b, n in enumerate((4, 3)):
    tasks = sinusoid.sample_tasks(jax.random.fold_in(base, b), n, 5, 5)
    for i in range(n):
      m = one(params, metajax.core.tasks.task_slice(tasks, i))
      want.append(np.asarray(m["loss"]))
  np.testing.assert_allclose(r.per_task["loss"], np.stack(want), rtol=2e-5)


def test_maml_classification_on_sampler():
  from metajax.models import Conv4
  data = sp.EpisodeData.from_dense(
      np.random.default_rng(1).random((5, 4, 4, 4, 1), np.float32))
  sampler = sp.EpisodeSampler(data, ways=2, shots=1, queries=1,
                              rotation="per_task")
  learner = metajax.MAML(Conv4(num_outputs=2, filters=2, blocks=1),
                         loss="cross_entropy", inner_lr=0.1, ways=2)
  params = learner.init(jax.random.key(0),
                        metajax.core.tasks.task_slice(sampler(jax.random.key(0)), 0))
  r = ev.evaluate(learner, params, sampler, num_tasks=5, batch_size=3,
                  steps=2)
  assert r.metric == "accuracy" and r.steps == 2
  assert len(r.curves["accuracy"]["mean"]) == 3
  assert all(0.0 <= v <= 1.0 for v in r.curves["accuracy"]["mean"])


def test_evaluate_bad_input():
  tasks = label_tasks([[0, 1]])
  with pytest.raises(ValueError, match="num_tasks must be at least 1"):
    ev.evaluate(AlwaysZero(), {}, lambda k, n: tasks, num_tasks=0)
  with pytest.raises(ValueError, match="batch_size"):
    ev.evaluate(AlwaysZero(), {}, tasks, batch_size=0)
  with pytest.raises(ValueError, match="metric 'f1' not reported"):
    ev.evaluate(AlwaysZero(), {}, tasks, metric="f1")
  with pytest.raises(ValueError, match="task mapping"):
    ev.evaluate(AlwaysZero(), {}, tasks, task_map="pmap")
  with pytest.raises(ValueError, match="EpisodeSampler or a function"):
    ev.evaluate(AlwaysZero(), {}, [tasks])
  bad = tasks._replace(query_y=tasks.query_y.astype(jnp.float32))
  with pytest.raises(ValueError, match="support_y is int32 but query_y"):
    ev.evaluate(AlwaysZero(), {}, bad)


# -- Lake's 20-way one-shot runs -----------------------------------------------
def glyph(k: int, side=105) -> np.ndarray:
  """A page (uint8, 255 = paper) with a stroke pattern unique to ``k``."""
  img = np.full((side, side), 255, np.uint8)
  img[10 + 3 * k: 20 + 3 * k, 5:40 + k] = 0
  img[50:55 + k, 60:62] = 0
  return img


def write_runs(root, n_runs=2, as_zip=True):
  """Runs whose test items are the training images in a shuffled order."""
  rng = np.random.default_rng(0)
  files, answers = {}, []
  for r in range(1, n_runs + 1):
    run = f"run{r:02d}"
    perm = rng.permutation(20)  # test item i shows class perm[i]
    lines = []
    for c in range(20):
      files[f"{run}/training/class{c + 1:02d}.png"] = glyph(c)
    for i in range(20):
      files[f"{run}/test/item{i + 1:02d}.png"] = glyph(perm[i])
      lines.append(f"{run}/test/item{i + 1:02d}.png "
                   f"{run}/training/class{perm[i] + 1:02d}.png")
    files[f"{run}/class_labels.txt"] = "\n".join(lines) + "\n"
    answers.append(perm)
  if as_zip:
    path = root / "all_runs.zip"
    with zipfile.ZipFile(path, "w") as zf:
      for name, x in files.items():
        if isinstance(x, str):
          zf.writestr(name, x)
        else:
          buf = io.BytesIO()
          Image.fromarray(x).save(buf, format="PNG")
          zf.writestr(name, buf.getvalue())
  else:
    path = root / "all_runs"
    for name, x in files.items():
      f = path / name
      f.parent.mkdir(parents=True, exist_ok=True)
      if isinstance(x, str):
        f.write_text(x)
      else:
        Image.fromarray(x).save(f)
  return path, answers


def neg_l2(test, train):
  t = test.reshape(len(test), -1)
  r = train.reshape(len(train), -1)
  return -((t[:, None] - r[None]) ** 2).sum(-1)


def test_lake_perfect_matcher_scores_zero_error(tmp_path):
  path, answers = write_runs(tmp_path)
  runs = ev.load_lake_runs(path)
  assert [r.name for r in runs] == ["run01", "run02"]
  assert runs[0].train.shape == (20, 105, 105, 1)
  np.testing.assert_array_equal(runs[0].answers, answers[0])
  assert runs[0].train.max() == 1.0 and runs[0].train.min() == 0.0  # ink = 1
  r = ev.lake_one_shot(neg_l2, runs)
  assert r.errors == {"run01": 0.0, "run02": 0.0}
  assert r.mean_error == 0.0 and r.ci95 == 0.0
  # the same images as costs, and Lake's baseline on identical images
  assert ev.lake_one_shot(lambda a, b: -neg_l2(a, b), runs,
                          kind="cost").mean_error == 0.0
  assert ev.lake_one_shot(ev.modified_hausdorff_matcher, runs[:1],
                          kind="cost").mean_error == 0.0
  # a matcher that always says class01 is right only for that item: 95%
  const = ev.lake_one_shot(lambda a, b: np.zeros((len(a), len(b))), runs)
  assert const.errors == {"run01": 95.0, "run02": 95.0}
  back = json.loads(const.to_json(tmp_path / "lake.json"))
  assert back["mean_error"] == 95.0 and back["errors"]["run02"] == 95.0
  # folder layout, resized runs
  folder, _ = write_runs(tmp_path, as_zip=False)
  small = ev.load_lake_runs(folder, size=28)
  assert small[1].test.shape == (20, 28, 28, 1)
  assert ev.lake_one_shot(neg_l2, small).mean_error == 0.0


def test_lake_learner_matcher(tmp_path):
  path, _ = write_runs(tmp_path, n_runs=1)
  runs = ev.load_lake_runs(path, size=14)
  learner = PixelPrototypes(ways=20)
  m = ev.learner_matcher(learner, {"scale": jnp.ones(())})
  assert m(runs[0].test, runs[0].train).shape == (20, 20)
  assert ev.lake_one_shot(m, runs).mean_error == 0.0


def test_lake_learner_matcher_uses_the_model_state(tmp_path):
  # Reptile carrying its inner Adam state needs it at test time, as evaluate.
  path, _ = write_runs(tmp_path, n_runs=1)
  run = ev.load_lake_runs(path, size=14)[0]
  reptile = metajax.Reptile(metajax.models.MLP(hidden=(8,), num_outputs=20),
                       loss="cross_entropy", eval_inner_steps=1,
                       persistent_inner_state=True)
  task = metajax.Task(run.train.reshape(20, -1), jnp.arange(20),
                 run.test.reshape(20, -1), jnp.arange(20))
  params = reptile.init(jax.random.PRNGKey(0), task)
  flat = lambda m: (lambda a, b: m(a.reshape(len(a), -1),
                                   b.reshape(len(b), -1)))
  with pytest.raises(ValueError, match="with_model_state"):
    flat(ev.learner_matcher(reptile, params))(run.test, run.train)
  state = reptile.init_model_state(params, task)
  scores = flat(ev.learner_matcher(reptile, params, model_state=state))(
      run.test, run.train)
  assert scores.shape == (20, 20) and np.isfinite(scores).all()


def test_lake_bad_input(tmp_path, monkeypatch):
  path, _ = write_runs(tmp_path, n_runs=1)
  runs = ev.load_lake_runs(path)
  with pytest.raises(ValueError, match="kind must be"):
    ev.lake_one_shot(neg_l2, runs, kind="similarity")
  with pytest.raises(ValueError, match=r"expected \(n_test, n_train\)"):
    ev.lake_one_shot(lambda a, b: np.zeros((20,)), runs)
  broken = tmp_path / "broken" / "all_runs.zip"
  broken.parent.mkdir()
  broken.write_bytes(path.read_bytes()[:5000])
  with pytest.raises(ValueError, match="all_runs.zip"):
    ev.load_lake_runs(broken)
  # class_labels.txt names a file that is not there
  folder, _ = write_runs(tmp_path / "f", n_runs=1, as_zip=False)
  (folder / "run01" / "test" / "item03.png").unlink()
  with pytest.raises((ValueError, FileNotFoundError), match="item03"):
    ev.load_lake_runs(folder)
  (tmp_path / "empty" / "omniglot").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match="all_runs.zip"):
    ev.load_lake_runs(data_dir=tmp_path / "empty")
  monkeypatch.delenv("METAJAX_DATA_DIR", raising=False)
  with pytest.raises(FileNotFoundError, match="METAJAX_DATA_DIR"):
    ev.lake_one_shot(neg_l2)


def test_real_lake_runs(shared_data_dir):
  runs = ev.load_lake_runs(data_dir=shared_data_dir)
  assert len(runs) == 20 and [r.name for r in runs][-1] == "run20"
  for r in runs:
    assert r.train.shape == r.test.shape == (20, 105, 105, 1)
    assert sorted(r.answers.tolist()) == list(range(20))
  # pixel nearest neighbour is a weak but better-than-chance matcher
  r = ev.lake_one_shot(neg_l2, runs[:3])
  assert 0.0 < r.mean_error < 95.0


@pytest.mark.slow
def test_real_lake_modified_hausdorff_matches_published(shared_data_dir):
  """Lake's demo_classification.py: the MHD baseline gives 38.8% error."""
  r = ev.lake_one_shot(ev.modified_hausdorff_matcher,
                       data_dir=shared_data_dir, kind="cost")
  assert r.mean_error == pytest.approx(38.8, abs=0.06)
