"""The papers' settings: one key scheme, a source for every entry, and every
(method, setting) pair builds its learner through the registry."""
from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metajax import configs
from metajax.algorithms import registry
from metajax.algorithms.maml_plus_plus import MAMLPlusPlus
from metajax.algorithms.reptile import Reptile
from metajax.models import MLP

OMNIGLOT = tuple(f"omniglot_{ways}way_{shots}shot" for ways in (5, 20)
                 for shots in (1, 5))
EMBEDDING = ("protonet", "matchingnet", "snail", "r2d2", "metaoptnet",
             "metaoptnet_ridge", "baseline", "baseline_pp", "rfs_simple",
             "simpleshot", "meta_baseline")
PAIRS = [(m, k) for m in configs.methods() for k in configs.settings(m)]
KEY = r"^(omniglot|miniimagenet|tieredimagenet|cifarfs|fc100)_\d+way_\d+shot$"


def _model(method):
  if method in ("cnp", "np", "anp"):
    return None
  # Embedding learners take a feature net; the others a net with a head.
  return MLP((4,), 3) if method in EMBEDDING else MLP((4,), 5)


def test_methods_are_the_registry():
  assert configs.methods() == registry.names()
  assert set(registry.DEFAULT_SETTINGS) == set(registry.names())
  for method, setting in registry.DEFAULT_SETTINGS.items():
    assert setting in configs.settings(method), (method, setting)


@pytest.mark.parametrize("method", [m for m in configs.methods()
                                    if m not in ("cnp", "np", "anp")])
def test_every_classification_method_has_the_omniglot_cells(method):
  assert set(OMNIGLOT) <= set(configs.settings(method))


def test_keys_follow_one_scheme():
  for method, key in PAIRS:
    assert (re.match(KEY, key) or re.match(r"^sinusoid_\d+shot$", key)
            or key == "gp_1d"), (method, key)


@pytest.mark.parametrize("method, setting", PAIRS)
def test_entry_is_sourced_and_builds_its_learner(method, setting):
  s = configs.get(method, setting)
  assert s.source.strip() and isinstance(s.note, str)
  assert s.learner and isinstance(s.outer, dict)
  lrn = registry.make(method, _model(method), setting=setting)
  for name, value in s.learner.items():
    assert getattr(lrn, name) == value, (name, getattr(lrn, name), value)


def test_overrides_beat_the_paper():
  lrn = registry.make("reptile", MLP((4,), 5), setting="omniglot_5way_1shot",
                      inner_steps=3)
  assert lrn.inner_steps == 3 and lrn.inner_lr == 1e-3


def test_unsourced_setting_is_refused():
  with pytest.raises(ValueError, match="source"):
    configs.PaperSetting(learner={}, outer={}, source=" ")


def test_errors_name_the_valid_choices():
  with pytest.raises(ValueError, match="unknown paper setting 'omniglot'.*"
                     "omniglot_5way_1shot.*omniglot_20way_5shot"):
    configs.get("protonet", "omniglot")
  with pytest.raises(ValueError, match="unknown method 'mamlx'.*maml.*"
                     "reptile"):
    configs.get("mamlx", "omniglot_5way_1shot")
  with pytest.raises(ValueError, match="unknown method"):
    configs.settings("mamlx")


def test_get_returns_a_copy():
  configs.get("maml", "omniglot_5way_1shot").learner["inner_lr"] = 99.0
  configs.get("metaoptnet", "miniimagenet_5way_1shot").outer[
      "lr_factors"][20] = 99.0
  assert configs.get("maml", "omniglot_5way_1shot").learner["inner_lr"] == 2.0
  assert configs.get("metaoptnet", "miniimagenet_5way_1shot").outer[
      "lr_factors"][20] == 0.06


def test_spot_values_against_the_papers():
  get = configs.get
  # MAML (cbfinn/maml README): 5-way one step of 0.4, 20-way 5 of 0.1 on
  # the code's loss, N x the mean cross-entropy: 2.0 on ours for both.
  five, twenty = (get("maml", k).learner for k in ("omniglot_5way_1shot",
                                                    "omniglot_20way_5shot"))
  assert (five["inner_steps"], five["inner_lr"]) == (1, 0.4 * 5)
  assert (twenty["inner_steps"], twenty["inner_lr"]) == (5, 0.1 * 20)
  assert get("maml", "omniglot_5way_1shot").outer["meta_batch"] == 32
  assert get("maml", "omniglot_20way_1shot").outer["meta_batch"] == 16
  # Variants: the same values with their switch.
  assert get("fomaml", "omniglot_5way_1shot").learner["first_order"] is True
  assert get("anil", "omniglot_20way_1shot").learner == twenty
  assert "MAML's hyperparameters" in get("anil", "omniglot_20way_1shot").source
  assert get("metasgd", "omniglot_5way_1shot").learner[
      "learn_inner_lr"] == "per_param"
  # MAML++ (released Omniglot configs): LSLR initialised at 0.1.
  for key in OMNIGLOT:
    assert get("mamlpp", key).learner["inner_lr"] == 0.1
  # Reptile (supervised-reptile README): 10-shot training tasks, 5 per batch.
  outer = get("reptile", "omniglot_5way_1shot").outer
  assert (outer["train_shots"], outer["meta_batch"]) == (10, 5)
  assert get("reptile", "omniglot_20way_5shot").outer["meta_iters"] == 200_000
  # ProtoNets: 60-way training on Omniglot, whatever the test ways.
  for key in OMNIGLOT:
    assert get("protonet", key).outer["train_ways"] == 60
    assert get("protonet", key).learner["ways"] == 60
  assert get("metaoptnet_ridge", "fc100_5way_1shot").learner["head"] == "ridge"
  assert get("cnp", "gp_1d").outer["meta_batch"] == 64


def test_omniglot_stand_ins_say_so():
  for key in OMNIGLOT:
    assert "no Omniglot cell" in configs.get("metaoptnet", key).note
    assert "60-way" in configs.get("protonet", key).note


def _lrs(opt, n, grad=1.0):
  params = {"w": jnp.zeros(())}
  state = opt.init(params)
  out = []
  for _ in range(n):
    upd, state = opt.update({"w": jnp.full((), grad)}, state, params)
    out.append(float(upd["w"]))
  return np.asarray(out)


def test_outer_optimizers_read_the_settings():
  outer = configs.get("reptile", "omniglot_20way_1shot").outer
  want = Reptile.outer_optimizer(meta_step=outer["meta_step"],
                                 meta_step_final=outer["meta_step_final"],
                                 meta_iters=outer["meta_iters"])
  np.testing.assert_allclose(
      _lrs(Reptile.outer_optimizer("omniglot_20way_1shot"), 3, -1.0),
      _lrs(want, 3, -1.0))
  s = configs.get("mamlpp", "miniimagenet_5way_5shot")
  want = MAMLPlusPlus.outer_optimizer(
      meta_lr=s.outer["meta_lr"], min_lr=s.outer["min_lr"],
      total_epochs=s.outer["total_epochs"],
      iters_per_epoch=s.learner["iters_per_epoch"], clip=s.outer["clip"])
  np.testing.assert_allclose(
      _lrs(MAMLPlusPlus.outer_optimizer("miniimagenet_5way_5shot"), 3, 50.0),
      _lrs(want, 3, 50.0))
  for opt in (Reptile.outer_optimizer, MAMLPlusPlus.outer_optimizer):
    with pytest.raises(ValueError, match="unknown paper setting"):
      opt("cifar")
  assert isinstance(MAMLPlusPlus.outer_optimizer("omniglot_20way_5shot"),
                    optax.GradientTransformation)


def test_table_has_a_row_per_setting():
  rows = configs.table().strip().split("\n")
  assert rows[0] == "| method | setting | learner kwargs | outer | source |"
  assert len(rows) == 2 + len(PAIRS)
  assert any(r.startswith("| reptile | omniglot_5way_1shot | ") and
             "train_shots=10" in r for r in rows)
  assert all(r.count(" | ") == 4 for r in rows[2:])


def test_code_loss_scale_matches_the_mean_loss_step():
  """cbfinn/maml's xent is per example / K, summed by tf.gradients: N x the
  mean cross-entropy, so its step 0.4 (5-way) is 2.0 on a mean loss."""
  import jax
  import jax.numpy as jnp
  from metajax.core import losses
  ways, shots = 5, 3
  logits = jax.random.normal(jax.random.PRNGKey(0), (ways * shots, ways))
  labels = jnp.repeat(jnp.arange(ways), shots)
  per_example = -jax.nn.log_softmax(logits)[jnp.arange(ways * shots), labels]
  code_loss = lambda z: jnp.sum(
      -jax.nn.log_softmax(z)[jnp.arange(ways * shots), labels] / shots)
  g_code = jax.grad(code_loss)(logits)
  g_mean = jax.grad(lambda z: losses.cross_entropy(z, labels))(logits)
  assert jnp.allclose(0.4 * g_code, 2.0 * g_mean, atol=1e-6)
  assert jnp.allclose(code_loss(logits), ways * per_example.mean(), rtol=1e-6)


def test_published_numbers_name_their_table_and_policy():
  for method in configs.methods():
    for key in configs.settings(method):
      for p in configs.get(method, key).published:
        assert p.where and p.batch_norm
        assert 0 < p.value <= 100
  assert configs.get("protonet", "omniglot_5way_1shot").published[0].value == 98.8
  assert configs.get("fomaml", "omniglot_20way_1shot").published[0].value == 89.4
  assert configs.get("maml", "omniglot_20way_1shot").published[0].value == 95.8
  assert not configs.get("anil", "omniglot_5way_1shot").published
  # Where users re-ran the official code, both numbers; the re-run says where.
  for (ways, shots), printed, rerun in [((5, 1), 98.8, 98.4),
                                        ((5, 5), 99.7, 99.6),
                                        ((20, 1), 96.0, 94.9),
                                        ((20, 5), 98.9, 98.6)]:
    p = configs.get("protonet", f"omniglot_{ways}way_{shots}shot").published[0]
    assert (p.value, p.official_code_rerun) == (printed, rerun)
    assert "prototypical-networks#2" in p.official_code_rerun_where
    assert p.to_dict()["official_code_rerun"] == rerun
  assert configs.get("maml", "omniglot_5way_1shot").published[0] \
      .official_code_rerun is None


def test_every_registered_method_names_its_paper():
  listing = registry.references().splitlines()
  assert [line.split()[0] for line in listing] == list(registry.names())
  assert set(registry.REFERENCES) == set(registry.names())
  assert all(line.split(None, 1)[1].strip() != "-" for line in listing)
  assert any(line.startswith("rfs_simple") and "Tian" in line
             for line in listing)
