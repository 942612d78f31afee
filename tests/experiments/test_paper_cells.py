"""The named paper-cell configs of the Omniglot experiment: each records the
official code's protocol and published number, validates without data, and
(one per method) runs a 2-step budget through the entry point on real data,
labelled shortened."""
from __future__ import annotations

import json

import pytest

from experiments.omniglot import configs, main, train
from metajax import configs as paper_configs
from metajax.core import masks
from metajax.experiment import config as config_lib
from metajax.experiment import metrics_log

PAPER = sorted(n for n in configs.VARIANTS if n.startswith("paper_"))
#: 2 steps of a small network: the structure of the cell, seconds to compile.
SMALL = ["iterations=2", "meta_batch=2", "filters=4", "eval_tasks=4",
         "eval_batch=2", "steps_per_call=1", "checkpoint_every=1",
         "val_tasks=2", "image_size=16"]


def test_every_paper_cell_has_a_named_config_that_validates():
  assert len(PAPER) >= 30
  for name in PAPER:
    cfg = configs.VARIANTS[name]()
    cfg.validate()
    paper = paper_configs.get(cfg.method, cfg.setting)
    assert paper.protocol and paper.published, name


def test_maml_cell_is_the_official_codes_network_and_step():
  cfg = configs.VARIANTS["paper_maml_5w1s"]()
  assert (cfg.filters, cfg.downsample, cfg.norm, cfg.features,
          cfg.head_init, cfg.adapt_norm, cfg.rotation) == (
              64, "stride", "maml", "pool", "normal", False, "per_task")
  assert (cfg.meta_batch, cfg.iterations, cfg.queries) == (32, 60_000, 1)
  learner = configs.build_learner(cfg)
  assert learner.inner_lr == 2.0 and learner.inner_steps == 1
  assert learner.adapt_mask is masks.exclude_norm
  twenty = configs.VARIANTS["paper_maml_20w1s"]()
  assert (twenty.meta_batch, configs.build_learner(twenty).inner_steps) == (
      16, 5)


def test_protonet_and_reptile_cells():
  p = configs.VARIANTS["paper_protonet_20w5s"]()
  assert (p.train_ways, p.ways, p.shots, p.train_queries, p.queries) == (
      60, 20, 5, 5, 15)
  assert (p.norm, p.lr_decay_every, p.val_every, p.patience,
          p.retrain_trainval, p.eval_tasks) == (
              "running", 2000, 100, 200, True, 1000)
  r = configs.VARIANTS["paper_reptile_5w1s"]()
  assert (r.train_shots, r.shots, r.queries, r.meta_batch,
          r.anneal_iterations, r.norm, r.eval_rotation) == (
              10, 1, 1, 5, 100_000, "transductive", "none")
  nt = configs.VARIANTS["paper_reptile_5w1s_nontransductive"]()
  assert (nt.norm, nt.eval_query_context, nt.batch_norm_policy) == (
      "transductive", "support", "non_transductive")
  assert configs.build_learner(nt).eval_query_context == "support"


#: one run per distinct structure (network, batch norm, learner, protocol);
#: the other cells differ from these in ways/shots and budget only.
CELLS = ["paper_maml_5w1s", "paper_protonet_5w1s",
         "paper_reptile_5w1s_nontransductive", "paper_mamlpp_5w1s",
         "paper_anil_20w1s", "paper_imaml_5w1s"]


@pytest.mark.data
@pytest.mark.parametrize("name", CELLS)
def test_named_cell_runs_a_two_step_budget(name, tmp_path, shared_data_dir,
                                           omniglot_cache_dir):
  out = tmp_path / name
  extra = ["val_every=2", "patience=1"] if "protonet" in name else []
  args = ["--config", name, "--workdir", str(out), "--data-dir",
          str(shared_data_dir), "--cache-dir", str(omniglot_cache_dir),
          "--no-progress"]
  for kv in SMALL + extra:
    args += ["--set", kv]
  r = main.main(args)
  assert json.loads((out / "results.json").read_text()) == r
  assert r["budget"] == "shortened"
  cfg = configs.VARIANTS[name]()
  assert r["protocol"]["batch_norm"] == cfg.norm
  assert r["published"]["value"] > 0
  assert cfg.batch_norm_policy in r["published"]["batch_norm"]
  assert 0 <= r["test"]["mean"] <= 1
  row = train.table(tmp_path).splitlines()[-1]
  assert f"{r['published']['value']:.2f}" in row and "shortened" in row
  if "reptile" in name:
    # Trained on 10-shot tasks (each inner step its own batch of 10 of the
    # 50), tested 1-shot with one query per class, test characters unrotated.
    assert r["protocol"]["train_sampler"]["shots"] == 10
    assert (r["protocol"]["test_sampler"]["shots"],
            r["protocol"]["test_sampler"]["queries"]) == (1, 1)
    assert r["protocol"]["test_sampler"]["rotation"] == "none"
    assert r["learner"]["inner_batch_size"] == 10
    assert r["outer_optimizer"]["meta_iters"] == 100_000
  if "protonet" in name:
    v = r["validation"]
    assert v["retrained_on"] == "trainval" and v["best_step"] >= 1
    assert v["rounds"][-1]["step"] == 2 and not v["stopped_early"]
    rows = metrics_log.read_metrics(out, split="protonet/val")
    assert rows and all("accuracy" in row for row in rows)
    png = train.learning_curves(tmp_path)
    assert png.exists() and png.stat().st_size > 1000


def test_maml_family_steps_follow_the_network():
  """The papers' Omniglot step (2.0 on a mean loss) on MAML's network; the
  shared protocol's conv-4 gets the step measured to learn on it; a set
  ``inner_lr`` wins either way."""
  build = lambda variant, sets: configs.build_learner(
      config_lib.override(configs.VARIANTS[variant](), sets))
  for method in configs.OTHER_NETWORK_INNER_LR:
    shared = config_lib.override(configs.default(), [f"method={method}"])
    assert not configs.paper_network(shared)
    assert build("default", [f"method={method}"]).inner_lr == (
        configs.OTHER_NETWORK_INNER_LR[method])
    assert build("default", [f"method={method}",
                             "inner_lr=1.5"]).inner_lr == 1.5
  assert build("paper_maml_5w1s", []).inner_lr == 2.0
  assert build("paper_maml_5w1s",
               ["method=anil", "adapt_norm=true"]).inner_lr == 2.0
  assert build("paper_metasgd_5w1s", []).inner_lr == 2.0
  assert build("paper_maml_5w1s", ["features=flatten"]).inner_lr == 0.4
