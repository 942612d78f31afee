"""Meta-train a CNP on 1-D GP functions and report its predictive log-likelihood.

    python -m experiments.gp_cnp                                   # 20,000 steps (minutes on a CPU)
    python -m experiments.gp_cnp --set iterations=200000           # the notebook's budget
    python -m experiments.gp_cnp --config tiny --workdir /tmp/g    # seconds, for tests
    python -m experiments.gp_cnp --set method=anp --workdir runs/gp/anp   # the ANP (or np)
    python -m experiments.gp_cnp --family runs/gp                  # their table and figure

Training follows DeepMind's neural-processes notebook: each batch draws 64
functions from a GP with a squared-exponential kernel (length scale 0.4),
a random number of context points (3..9) and of extra targets (2..9), the
targets including the context; Adam at 1e-4. Test tasks are functions on a
400-point grid with a random context subset, drawn from a fixed seed.

Writes ``<workdir>/results.json`` (mean predictive log-likelihood per
target point and MSE of the predictive mean over the test tasks, with 95%
intervals, and the run record), figures of the predictive mean and +-2
sigma band on a few test functions (``cnp_gp_<i>.png``), checkpoints
(``checkpoints/cnp``; rerunning the same command resumes) and per-step
training metrics (``metrics.jsonl``).
"""
from __future__ import annotations

import argparse

from experiments.gp_cnp import configs, family, train
from metajax.experiment import cli


class _FamilyFlag(argparse.Action):
  """``--family DIR``: the NP family's table and DIR/family.png, then exit."""

  def __call__(self, parser, namespace, values, option_string=None):
    print(family.table(values))
    print(f"wrote {family.figure(values)}")
    parser.exit()


def extra_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
      "--family", action=_FamilyFlag, nargs=None, default=argparse.SUPPRESS,
      metavar="DIR", help="print the table of the CNP/NP/ANP runs under DIR, "
      "draw their predictions on the same test functions into "
      "DIR/family.png (from their checkpoints) and exit")


def main(argv=None):
  return cli.run(argv, configs_module=configs,
                 train_and_evaluate=train.train_and_evaluate,
                 default_workdir="runs/gp_cnp", description=__doc__,
                 extra_flags=extra_flags, prog="python -m experiments.gp_cnp")


if __name__ == "__main__":
  main()
