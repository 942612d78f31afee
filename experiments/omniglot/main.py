"""Meta-train and evaluate one learner on few-shot Omniglot.

    python -m experiments.omniglot --method maml                         # 5-way 1-shot, runs/omniglot/maml
    python -m experiments.omniglot --method protonet --set ways=20 --set shots=5
    python -m experiments.omniglot --method maml --set ways=20 --set filters=64 --set iterations=40000
    python -m experiments.omniglot --method maml --config tiny --workdir /tmp/o   # seconds, for tests
    python -m experiments.omniglot --table results/omniglot_5w1s         # markdown table of runs
    python -m experiments.omniglot --curves results/paper_cells          # their learning curves
    python -m experiments.omniglot --config paper_maml_5w1s              # a paper cell, full budget
    python -m experiments.omniglot --config paper_maml_5w1s --compare-grads   # exact vs first order ...
    python -m experiments.omniglot --method baseline --set norm=running --set iterations=20000  # transfer
    python -m experiments.omniglot --method meta_baseline --set norm=running --set pretrain_iterations=10000

Every method sees the same protocol, spelled out in the results file: the
class split (``split``, Vinyals by default), the rotation policy
(``rotation``, rotations as new classes by default, as ProtoNets), N-way
K-shot Q-query episodes sampled on device, and the same ``eval_tasks``
(600) test tasks drawn from ``eval_seed``, so accuracies are paired. The
backbone is conv-4 (``filters``, ``downsample``, ``norm``);
optimisation-based learners get a linear head, metric and closed-form
learners use the features. The transfer baselines (``baseline``,
``baseline_pp``, ``rfs_simple``, ``simpleshot``) pretrain a classifier over
all training classes on minibatches of ``pretrain_batch`` images for
``iterations`` steps and fit their head on each test task's frozen support
features; ``meta_baseline`` pretrains for ``pretrain_iterations``, then
meta-trains on episodes. ``--print-config`` lists every field.

Writes ``<workdir>/results.json`` (protocol, learner settings and the paper
setting they come from, training time and curve, test accuracy with a 95%
interval and its per-inner-step curve, run record), per-step training
metrics (``metrics.jsonl``) and checkpoints (``checkpoints/<method>``;
rerunning the same command resumes, a changed config is refused).
"""
from __future__ import annotations

import argparse

from experiments.omniglot import configs, train
from metajax.experiment import cli

DEFAULT_WORKDIR = "runs/omniglot"


class _MethodFlag(argparse.Action):
  """``--method NAME``: ``--set method=NAME`` with the default workdir
  ``runs/omniglot/NAME`` (one run folder per method)."""

  def __call__(self, parser, namespace, values, option_string=None):
    namespace.set = [*(namespace.set or []), f"method={values}"]
    if namespace.workdir == DEFAULT_WORKDIR:
      namespace.workdir = f"{DEFAULT_WORKDIR}/{values}"


class _TableFlag(argparse.Action):
  """``--table DIR``: print the markdown table of the runs under DIR (and,
  where a configuration ran with several seeds, the table across seeds),
  exit."""

  def __call__(self, parser, namespace, values, option_string=None):
    print(train.table(values))
    seeds = train.seed_table(values)
    if seeds:
      print("\nAcross seeds:\n\n" + seeds)
    parser.exit()


class _CurvesFlag(argparse.Action):
  """``--curves DIR``: draw DIR/curves.png from the runs under DIR, exit."""

  def __call__(self, parser, namespace, values, option_string=None):
    print(f"wrote {train.learning_curves(values)}")
    parser.exit()


def extra_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--method", action=_MethodFlag, dest="set", metavar="NAME",
      help=f"the learner, one of {', '.join(configs.METHODS)}: short for "
      f"--set method=NAME, with --workdir {DEFAULT_WORKDIR}/NAME by default")
  parser.add_argument(
      "--table", action=_TableFlag, nargs=None, default=argparse.SUPPRESS,
      metavar="DIR", help="print a markdown table of DIR/*/results.json (and one "
      "across seeds for configurations run with several) and exit")
  parser.add_argument(
      "--curves", action=_CurvesFlag, nargs=None, default=argparse.SUPPRESS,
      metavar="DIR", help="draw the learning curves of DIR/*/metrics.jsonl "
      "into DIR/curves.png and exit")
  parser.add_argument(
      "--compare-grads", action="store_true",
      help="train nothing: compare the exact, first-order, implicit and "
      "Reptile meta-gradients of the run's latest checkpoint (or its "
      "initialisation) on one meta-batch of training tasks, print the table "
      "and write <workdir>/grad_compare.json")
  parser.add_argument(
      "--cache-dir", default=None, metavar="DIR",
      help="where decoded images are cached (default: $METAJAX_CACHE_DIR or "
      "~/.cache/metajax)")


def main(argv=None):
  return cli.run(argv, configs_module=configs,
                 train_and_evaluate=train.train_and_evaluate,
                 default_workdir=DEFAULT_WORKDIR, description=__doc__,
                 extra_flags=extra_flags, prog="python -m experiments.omniglot")


if __name__ == "__main__":
  main()
