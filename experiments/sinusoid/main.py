"""MAML vs a pretrained baseline on sinusoid regression, end to end.

    python -m experiments.sinusoid                          # 20,000 iterations (minutes on a CPU)
    python -m experiments.sinusoid --config paper           # the paper's 70,000 meta-iterations
    python -m experiments.sinusoid --config paper --set train_per_k=true
    python -m experiments.sinusoid --config tiny --workdir /tmp/s   # seconds, for tests

Writes ``<workdir>/results.json`` (MSE after each inner step for K=5 and
K=10 on 600 fixed test tasks, with 95% confidence intervals, for MAML and
the pretrained baseline, the paper's K=5 numbers beside them, and the run
record) and ``<workdir>/sinusoid.png`` (MAML's Fig. 2: ground truth,
pre-update prediction, after 1 and 10 steps). Checkpoints go to
``<workdir>/checkpoints/<method>_K<shots>`` and per-step training metrics to
``<workdir>/metrics.jsonl``; rerunning the same command resumes, a changed
config is refused (``--fresh`` starts over).
"""
from __future__ import annotations

from experiments.sinusoid import configs, train
from metajax.experiment import cli


def main(argv=None):
  return cli.run(argv, configs_module=configs,
                 train_and_evaluate=train.train_and_evaluate,
                 default_workdir="runs/sinusoid", description=__doc__,
                 prog="python -m experiments.sinusoid")


if __name__ == "__main__":
  main()
