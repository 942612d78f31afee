"""The Omniglot entry point runs tiny configurations end to end on real data.

The configuration tests (paper settings, overrides, validation) build
learners only, without data or compilation.
"""
from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.omniglot import configs, main, train
from metajax import configs as paper_configs
from metajax.algorithms import registry
from metajax.experiment import config as config_lib
from metajax.experiment import metrics_log

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(tmp_path, shared_data_dir, omniglot_cache_dir, *args):
  return main.main([*args, "--config", "tiny", "--data-dir",
                    str(shared_data_dir), "--cache-dir",
                    str(omniglot_cache_dir), "--no-progress"])


@pytest.mark.parametrize("method", ["maml", "protonet", "reptile"])
def test_tiny_run_writes_results(method, tmp_path, shared_data_dir,
                                 omniglot_cache_dir, capsys):
  out = tmp_path / method
  results = _run(tmp_path, shared_data_dir, omniglot_cache_dir,
                 "--method", method, "--workdir", str(out))
  saved = json.loads((out / "results.json").read_text())
  assert saved == results
  assert saved["method"] == method and results["test"]["num_tasks"] == 6
  assert saved["protocol"]["split"] == "vinyals"
  assert saved["protocol"]["test_classes"] == 423
  assert saved["protocol"]["batch_norm"] == "transductive"
  assert 0.0 <= saved["test"]["mean"] <= 1.0 and saved["test"]["ci95"] >= 0
  assert saved["train"]["iterations"] == 4
  assert saved["budget"] == "shortened"
  assert saved["paper_setting"]["name"] == "omniglot_5way_1shot"
  assert saved["paper_setting"]["source"]
  assert saved["run"]["git"]["commit"] is None or len(
      saved["run"]["git"]["commit"]) == 40
  assert saved["run"]["jax"] and saved["run"]["wall_time_s"] > 0
  assert [r["step"] for r in metrics_log.read_metrics(
      out, split=f"{method}/train")] == [0, 1, 2, 3]
  expected = ({"name": "reptile_sgd", "meta_step": 1.0,
               "meta_step_final": 0.0, "meta_iters": 4}
              if method == "reptile" else
              {"name": "adam", "meta_lr": 1e-3, "eps": 1e-8})
  assert saved["outer_optimizer"] == expected
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    main.main(["--table", str(tmp_path)])
  assert e.value.code == 0
  assert f"| {method} |" in capsys.readouterr().out


def test_train_episodes_and_backbone_options(tmp_path, shared_data_dir,
                                             omniglot_cache_dir):
  out = tmp_path / "run"
  r = _run(tmp_path, shared_data_dir, omniglot_cache_dir,
           "--method", "protonet", "--workdir", str(out),
           "--set", "train_ways=7", "--set", "train_shots=2",
           "--set", "train_queries=3", "--set", "downsample=stride",
           "--set", "features=pool", "--set", "compute_dtype=bfloat16")
  train_sampler = r["protocol"]["train_sampler"]
  assert (train_sampler["ways"], train_sampler["shots"],
          train_sampler["queries"]) == (7, 2, 3)
  test_sampler = r["protocol"]["test_sampler"]
  assert (test_sampler["ways"], test_sampler["shots"],
          test_sampler["queries"]) == (5, 1, 2)
  assert r["learner"]["ways"] == 7
  assert r["protocol"]["backbone"]["downsample"] == "stride"
  assert "downsample = 'stride'" in r["learner"]["model"]
  assert r["protocol"]["backbone"]["features"] == "pool"
  assert r["protocol"]["backbone"]["compute_dtype"] == "bfloat16"
  cfg = config_lib.override(configs.tiny(), ["compute_dtype=bfloat16"])
  assert configs.backbone(cfg).dtype == jnp.bfloat16
  assert configs.backbone(configs.tiny()).dtype is None
  assert np.isfinite(r["test"]["mean"])


def test_nearest_resize_gives_binary_inputs(shared_data_dir,
                                            omniglot_cache_dir):
  # jakesnell/prototypical-networks: PIL's default filter on 1-bit PNGs
  cfg = config_lib.override(configs.tiny(), ["resize=nearest"])
  nearest = train.load_split(cfg, shared_data_dir, omniglot_cache_dir)
  linear = train.load_split(configs.tiny(), shared_data_dir,
                            omniglot_cache_dir)
  pixels = np.asarray(nearest.test.images[:20])
  assert set(np.unique(pixels)) == {0.0, 1.0}
  assert np.unique(np.asarray(linear.test.images[:20])).size > 100
  assert abs(pixels.mean() - float(np.mean(linear.test.images[:20]))) < 0.01


def test_method_flag_picks_a_workdir_per_method(monkeypatch, tmp_path):
  calls = []
  monkeypatch.setattr(train, "train_and_evaluate",
                      lambda cfg, wd, **kw: calls.append((cfg, wd, kw)))
  monkeypatch.chdir(tmp_path)
  main.main(["--method", "protonet", "--config", "tiny"])
  main.main(["--set", "method=r2d2", "--workdir", "elsewhere",
             "--cache-dir", "c"])
  main.main(["--workdir", "mine", "--method", "anil"])
  (p_cfg, p_wd, p_kw), (r_cfg, r_wd, r_kw), (a_cfg, a_wd, _) = calls
  assert p_cfg.method == "protonet" and p_wd == pathlib.Path(
      "runs/omniglot/protonet")
  assert p_kw == {"data_dir": None, "progress": True, "cache_dir": None,
                  "compare_grads": False}
  assert r_cfg.method == "r2d2" and r_wd == pathlib.Path("elsewhere")
  assert r_kw["cache_dir"] == "c"
  assert a_cfg.method == "anil" and a_wd == pathlib.Path("mine")


def test_table_reads_the_committed_results_of_the_earlier_layout():
  text = train.table(ROOT / "results" / "omniglot_5w1s" / "earlier_code")
  rows = text.splitlines()[2:]
  assert len(rows) == 12  # the twelve learners of that time
  maml = ("| maml | 5w1s | 89.33 ± 0.60 | - | - | 10 | 500 | 8 | 600 | 0 | "
          "1.412 -> 0.399 | 146 | - |")
  assert maml in rows


def test_table_of_the_committed_paper_cells_shows_published_and_policy():
  rows = train.table(ROOT / "results" / "paper_cells").splitlines()[2:]
  protonet = [r for r in rows if r.startswith("| protonet | 5w1s |")]
  # The files predate the official code's re-run number; the library's
  # current reference for the cell supplies it.
  assert protonet and "| 98.80 (code re-run: 98.40) | running |" in protonet[0]
  assert "| shortened |" in protonet[0]


def _write_result(root, name, *, mean, ci95=0.002, rerun=None, **config):
  cfg = {"method": "protonet", "ways": 5, "shots": 5, "iterations": 6000,
         **config}
  published = {"value": 99.7, "ci95": None}
  if rerun is not None:  # results files written before the field lack it
    published["official_code_rerun"] = rerun
  (root / name).mkdir()
  (root / name / "results.json").write_text(json.dumps({
      "method": cfg["method"], "config": cfg, "budget": "shortened",
      "published": published,
      "test": {"mean": mean, "ci95": ci95, "num_tasks": 1000}}))


def test_seed_table_groups_runs_that_differ_only_in_seed(tmp_path, capsys):
  # Seed 0 written before a field existed (resize absent: its default).
  _write_result(tmp_path, "a_seed0", mean=0.9963, seed=0)
  _write_result(tmp_path, "a_seed1", mean=0.9971, seed=1, resize="linear")
  _write_result(tmp_path, "a_seed2", mean=0.9958, seed=2, resize="linear")
  _write_result(tmp_path, "b_nearest", mean=0.9955, seed=1, resize="nearest",
                rerun=99.6)
  _write_result(tmp_path, "c_longer", mean=0.99, seed=0, iterations=9000)
  (tmp_path / "d_foreign").mkdir()
  (tmp_path / "d_foreign" / "results.json").write_text('{"not": "omniglot"}')
  rows = train.seed_table(tmp_path).splitlines()
  assert len(rows) == 3  # header, rule, one group: the others have one seed
  acc = 100 * np.array([0.9963, 0.9971, 0.9958])
  assert f"| {acc.mean():.2f} ± {acc.std(ddof=1):.2f} (3 seeds) |" in rows[2]
  assert rows[2].startswith("| protonet | 5w5s | 0 (a_seed0): 99.63 ± 0.20; "
                            "1 (a_seed1): 99.71 ± 0.20; 2 (a_seed2): 99.58")
  assert rows[2].endswith("| 99.70 | shortened |")
  # The main table shows what others got from the official code, when known.
  nearest = [row for row in train.table(tmp_path).splitlines()
             if "99.55 ± 0.20" in row]
  assert len(nearest) == 1
  assert "| 99.70 (code re-run: 99.60) |" in nearest[0]
  # A different configuration is not a seed: with one run each, no table.
  (tmp_path / "a_seed1" / "results.json").unlink()
  (tmp_path / "a_seed2" / "results.json").unlink()
  assert train.seed_table(tmp_path) == ""
  with pytest.raises(SystemExit):
    main.main(["--table", str(tmp_path)])
  assert "Across seeds" not in capsys.readouterr().out


def test_table_flag_prints_the_seed_table(tmp_path, capsys):
  _write_result(tmp_path, "s0", mean=0.98, seed=0)
  _write_result(tmp_path, "s1", mean=0.99, seed=1)
  with pytest.raises(SystemExit):
    main.main(["--table", str(tmp_path)])
  out = capsys.readouterr().out
  assert "Across seeds" in out and "98.50 ± 0.71 (2 seeds)" in out


def test_every_method_is_registered_and_has_the_omniglot_settings():
  assert set(configs.METHODS) <= set(registry.names())
  for method in configs.METHODS:
    for ways in (5, 20):
      for shots in (1, 5):
        cfg = configs.Config(method=method, ways=ways, shots=shots)
        assert cfg.setting in paper_configs.settings(method)
        config_lib.validate(cfg)


def test_overrides_replace_the_paper_values():
  cfg = configs.Config(inner_lr=0.1, inner_steps=2, eval_inner_steps=3)
  learner = configs.build_learner(cfg)
  assert (learner.inner_lr, learner.inner_steps,
          learner.eval_inner_steps) == (0.1, 2, 3)
  paper = paper_configs.get("maml", "omniglot_5way_1shot").learner
  plain = configs.build_learner(configs.Config())
  # the paper's step count; its step is for MAML's network, not this one
  assert (plain.inner_lr, plain.inner_steps) == (
      configs.OTHER_NETWORK_INNER_LR["maml"], paper["inner_steps"])
  assert plain.model.num_outputs == 5 and plain.model.filters == 32
  proto = configs.build_learner(configs.Config(method="protonet",
                                               train_ways=20))
  assert proto.ways == 20 and proto.model.num_outputs is None


@pytest.mark.parametrize("overrides,named", [
    (["method=nope"], "method"), (["ways=1"], "ways"), (["ways=10"], "ways"),
    (["shots=0"], "shots"), (["queries=0"], "queries"),
    (["shots=5", "queries=16"], "queries"),
    (["train_shots=5", "train_queries=16"], "train_queries"),
    (["train_ways=20"], "train_ways"), (["split=omni"], "split"),
    (["rotation=random"], "rotation"), (["filters=0"], "filters"),
    (["downsample=avgpool"], "downsample"), (["norm=batch"], "norm"),
    (["features=max"], "features"), (["resize=bicubic"], "resize"),
    (["compute_dtype=float16"], "compute_dtype"),
    (["image_size=8"], "image_size"), (["inner_lr=-1"], "inner_lr"),
    (["inner_steps=0"], "inner_steps"),
    (["eval_inner_steps=-1"], "eval_inner_steps"),
    (["eval_steps=-1"], "eval_steps"),
    (["eval_steps=3", "eval_inner_steps=4"], "eval_inner_steps"),
    (["method=protonet", "inner_lr=0.1"], "inner_lr"),
    (["eval_batch=0"], "eval_batch"), (["task_map=pmap"], "task_map"),
    (["chunk_size=0"], "chunk_size"), (["meta_lr=0"], "meta_lr"),
    (["pretrain_batch=1"], "pretrain_batch"),
    (["method=protonet", "pretrain_iterations=3"], "pretrain_iterations"),
    (["method=baseline", "val_every=2", "retrain_trainval=True"],
     "retrain_trainval")])
def test_validate_names_the_field(overrides, named):
  cfg = config_lib.override(configs.tiny(), overrides)
  with pytest.raises(config_lib.ConfigError, match=named):
    config_lib.validate(cfg)


@pytest.fixture(scope="module")
def plain_tiny_run(tmp_path_factory, shared_data_dir, omniglot_cache_dir):
  """``(workdir, results)`` of the tiny MAML config, run once."""
  out = tmp_path_factory.mktemp("plain") / "maml"
  return out, _run(None, shared_data_dir, omniglot_cache_dir, "--workdir",
                   str(out))


def test_extend_continues_a_run_as_if_given_the_larger_budget(
    tmp_path, shared_data_dir, omniglot_cache_dir, plain_tiny_run, capsys):
  straight_dir, straight = plain_tiny_run
  work = tmp_path / "extended"
  _run(tmp_path, shared_data_dir, omniglot_cache_dir, "--workdir", str(work),
       "--set", "iterations=2")
  with pytest.raises(SystemExit):  # a changed budget without --extend
    _run(tmp_path, shared_data_dir, omniglot_cache_dir, "--workdir",
         str(work))
  assert "only larger" not in capsys.readouterr().err
  extended = _run(tmp_path, shared_data_dir, omniglot_cache_dir,
                  "--workdir", str(work), "--extend")
  assert extended["train"]["resumed_from_step"] == 2
  assert extended["train"]["steps_trained"] == 2
  assert [(e["iterations"]["from"], e["iterations"]["to"])
          for e in extended["train"]["extensions"]] == [(2, 4)]
  assert straight["train"]["extensions"] == []
  assert extended["config"] == straight["config"]
  rows = lambda d: [(r["step"], r["loss"]) for r in metrics_log.read_metrics(
      d, split="maml/train")]
  assert rows(work) == rows(straight_dir)
  assert extended["test"]["mean"] == straight["test"]["mean"]
  with pytest.raises(SystemExit):  # a smaller budget is no extension
    _run(tmp_path, shared_data_dir, omniglot_cache_dir, "--workdir",
         str(work), "--set", "iterations=3", "--extend")
  assert "only larger iterations" in capsys.readouterr().err


def test_extend_is_refused_where_the_schedule_follows_the_budget(tmp_path):
  with pytest.raises(SystemExit) as e:
    main.main(["--config", "tiny", "--method", "reptile", "--workdir",
               str(tmp_path / "r"), "--extend"])
  assert e.value.code == 2
  assert configs.budget_dependent(config_lib.override(
      configs.tiny(), ["method=reptile", "anneal_iterations=10"])) == []
  assert configs.budget_dependent(config_lib.override(
      configs.tiny(), ["method=protonet", "val_every=2"])) == []


def test_validation_episodes_are_fixed_or_fresh_per_round():
  fixed = config_lib.override(configs.tiny(), ["val_seed=3"])
  assert {train.validation_seed(fixed, s) for s in (2, 4, 6)} == {3}
  fresh = config_lib.override(fixed, ["val_episodes=fresh"])
  assert len({train.validation_seed(fresh, s) for s in (2, 4, 6)}) == 3
  with pytest.raises(ValueError, match="val_episodes"):
    config_lib.validate(config_lib.override(fixed, ["val_episodes=random"]))


def test_extend_continues_early_stopping_and_retraining(
    tmp_path, shared_data_dir, omniglot_cache_dir):
  # Fresh validation episodes each round: a resumed run must draw the same.
  stopping = ["--method", "protonet", "--set", "val_every=2", "--set",
              "patience=5", "--set", "retrain_trainval=true", "--set",
              "val_episodes=fresh"]
  straight = _run(tmp_path, shared_data_dir, omniglot_cache_dir, *stopping,
                  "--workdir", str(tmp_path / "straight"))
  work = tmp_path / "extended"
  _run(tmp_path, shared_data_dir, omniglot_cache_dir, *stopping,
       "--workdir", str(work), "--set", "iterations=2")
  extended = _run(tmp_path, shared_data_dir, omniglot_cache_dir, *stopping,
                  "--workdir", str(work), "--extend")
  assert extended["validation"]["rounds"] == straight["validation"]["rounds"]
  assert extended["validation"]["episodes"] == "fresh"
  assert extended["validation"]["retrained_steps"] == (
      straight["validation"]["retrained_steps"])
  rows = lambda d: [(r["step"], r["loss"]) for r in metrics_log.read_metrics(
      d, split="protonet_trainval/train")]
  assert rows(work) == rows(tmp_path / "straight")
  assert extended["test"]["mean"] == straight["test"]["mean"]
  with pytest.raises(SystemExit):  # rounds must end where a longer run's do
    _run(tmp_path, shared_data_dir, omniglot_cache_dir, *stopping,
         "--workdir", str(work), "--set", "iterations=5", "--extend")


def test_grad_compare_every_tracks_the_directions_during_training(
    tmp_path, shared_data_dir, omniglot_cache_dir, plain_tiny_run, capsys):
  out = tmp_path / "gc"
  results = _run(tmp_path, shared_data_dir, omniglot_cache_dir, "--workdir",
                 str(out), "--set", "grad_compare_every=3")
  gc = results["grad_compare"]
  assert gc["steps"] == [0, 3, 4] and gc["every"] == 3
  assert set(gc["cosine"]) == {"exact", "first_order", "implicit", "reptile"}
  assert gc["cosine"]["exact"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
  assert all(-1 <= c <= 1 for c in gc["cosine"]["first_order"])
  rows = metrics_log.read_metrics(out, split=train.GRAD_COMPARE_SPLIT)
  assert [r["step"] for r in rows] == [0, 3, 4]
  assert rows[1]["first_order/cosine/all"] == gc["cosine"]["first_order"][1]
  # training is the run a plain config makes
  assert results["test"]["mean"] == plain_tiny_run[1]["test"]["mean"]
  # the one-off comparison of the trained run, from the command line
  capsys.readouterr()
  once = _run(tmp_path, shared_data_dir, omniglot_cache_dir, "--workdir",
              str(out), "--set", "grad_compare_every=3", "--compare-grads")
  assert once["step"] == 4 and "| first_order | all |" in (
      capsys.readouterr().out)
  saved = json.loads((out / train.COMPARISON_NAME).read_text())
  assert saved["comparison"]["cosine"]["first_order"]["all"] == pytest.approx(
      gc["cosine"]["first_order"][-1], rel=1e-5)


def test_transfer_baselines_pretrain_then_fit_heads(tmp_path, shared_data_dir,
                                                    omniglot_cache_dir):
  """SimpleShot (one pretraining stage, the base mean) and Meta-Baseline
  (pretraining, then episodes from the pretrained backbone), tiny."""
  simple = _run(tmp_path, shared_data_dir, omniglot_cache_dir,
                "--method", "simpleshot", "--workdir", str(tmp_path / "s"),
                "--set", "norm=running", "--set", "pretrain_batch=6")
  assert simple["protocol"]["train_sampler"]["kind"] == "class_batches"
  assert simple["protocol"]["train_sampler"]["num_labels"] == 4112
  assert simple["protocol"]["simpleshot_feature_mean"]["images"] == 4112 * 20
  assert simple["learner"]["base_classes"] == 4112
  assert simple["train"]["iterations"] == 4
  meta = _run(tmp_path, shared_data_dir, omniglot_cache_dir,
              "--method", "meta_baseline", "--workdir", str(tmp_path / "m"),
              "--set", "pretrain_iterations=2", "--set", "pretrain_batch=6")
  pre = meta["protocol"]["pretraining"]
  assert pre["iterations"] == 2 and pre["sampler"]["batch_size"] == 6
  assert [r["step"] for r in metrics_log.read_metrics(
      tmp_path / "m", split="meta_baseline_pretrain/train")] == [0, 1]
  assert meta["protocol"]["train_sampler"]["ways"] == 5
  assert meta["train"]["iterations"] == 4


def test_simpleshot_base_mean_covers_every_image_and_turn():
  from types import SimpleNamespace

  from metajax.algorithms.transfer import TransferLearner
  from metajax.models import Conv4
  images = np.random.default_rng(0).integers(
      0, 255, size=(3, 2, 4, 4, 1), dtype=np.uint8)
  learner = TransferLearner(Conv4(None, filters=2, blocks=1, norm="none"),
                            base_classes=12, head="simpleshot")
  x = images.reshape(6, 4, 4, 1).astype(np.float32) / 255
  params = learner.init(jax.random.PRNGKey(0), _task(x[:2], x[2:4]))
  got = train.base_feature_mean(learner, params, None,
                                SimpleNamespace(images=images), "classes")
  every = np.concatenate([np.rot90(x, k, axes=(1, 2)) for k in range(4)])
  want = np.asarray(learner.apply(params["model"], every)).mean(0)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  plain = train.base_feature_mean(learner, params, None,
                                  SimpleNamespace(images=images), "none")
  np.testing.assert_allclose(
      np.asarray(plain), np.asarray(learner.apply(params["model"], x)).mean(0),
      rtol=1e-5, atol=1e-6)


def _task(support, query):
  import metajax as mj
  zeros = lambda a: np.zeros(len(a), np.int32)  # noqa: E731
  return mj.Task(support, zeros(support), query, zeros(query))
