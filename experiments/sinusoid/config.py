"""Configuration of the sinusoid experiment; defaults follow MAML's paper/code.

MAML (cbfinn/maml, ``main.py``): MLP 1-40-40-1 ReLU, K=10 support points,
one inner step of ``alpha = 0.01``, 25 tasks per meta-batch, Adam 1e-3,
70,000 meta-iterations. The pretrained baseline is trained on the same task
distribution by plain regression (no inner loop) for as many iterations and
fine-tuned at test time with the same step size. Evaluation: 600 test tasks,
each adapted on K points and scored by the MSE on K other points of the same
sinusoid, mean with a 95% interval ``1.96 sd / sqrt(600)``.
"""
from __future__ import annotations

import dataclasses

PAPER_ITERATIONS = 70_000


@dataclasses.dataclass
class Config:
  iterations: int = 20_000          # the paper: 70,000 (--paper)
  baseline_iterations: int | None = None  # default: same as iterations
  meta_batch: int = 25
  train_shots: int = 10
  train_query: int = 10
  train_per_k: bool = False        # one model per eval K, trained with that K
  hidden: tuple[int, ...] = (40, 40)
  init: str = "maml"               # 'maml' (truncated normal sd 0.01) or 'lecun'
  inner_lr: float = 0.01
  inner_steps: int = 1
  first_order: bool = False
  meta_lr: float = 1e-3
  eval_tasks: int = 600
  eval_shots: tuple[int, ...] = (5, 10)
  eval_steps: int = 10             # curve over 0..eval_steps inner steps
  report_steps: tuple[int, ...] = (1, 5, 10)
  eval_query: int | None = None    # None: as many query points as shots (MAML's code)
  seed: int = 0
  eval_seed: int = 1
  steps_per_call: int = 500
  checkpoint_every: int = 5_000

  @property
  def baseline_iters(self) -> int:
    return self.iterations if self.baseline_iterations is None else self.baseline_iterations


def paper() -> Config:
  return Config(iterations=PAPER_ITERATIONS)


def tiny() -> Config:
  """A seconds-long configuration for tests."""
  return Config(iterations=40, meta_batch=4, hidden=(8, 8), eval_tasks=16,
                eval_steps=3, report_steps=(1, 3), steps_per_call=20,
                checkpoint_every=20)
