"""Configs of the CNP experiment on 1-D Gaussian-process regression.

Training follows DeepMind's neural-processes notebook: each batch draws 64
functions from a GP with a squared-exponential kernel (length scale 0.4), a
random number of context points (3..max_context-1) and of extra targets
(2..max_context-1), the targets including the context; Adam at 1e-4. The
counts are drawn on device and every batch is padded to the largest shape
(:mod:`metajax.data.gp`), so a run compiles once. The CNP's sizes are the
paper's (``metajax.configs.get("cnp", "gp_1d")``) unless
``encoder_sizes``/``decoder_sizes`` are set.

Variants: ``default`` (20,000 iterations), ``paper`` (the notebook's
200,000) and ``tiny`` (seconds, for tests). On a 2-core CPU shared with
other work (load 3.6) the default config trains at 92 meta-steps per second
after a one-off compilation of about 8 s (100-step chunks: 0.7 s at best,
1.1 s median), so ``default`` takes about 4 minutes and ``paper`` 25-40
minutes.
"""
from __future__ import annotations

import dataclasses

from experiments import common


def _check_sizes(name: str, sizes) -> None:
  if sizes is None:
    return
  if not sizes or any(isinstance(w, bool) or not isinstance(w, int) or w < 1
                      for w in sizes):
    raise ValueError(
        f"{name} must be None (the paper's) or one or more widths >= 1, got "
        f"{sizes!r}")


#: the models this experiment trains (registry names): the CNP, the latent
#: Neural Process and the Attentive Neural Process.
METHODS = ("cnp", "np", "anp")


@dataclasses.dataclass
class Config:
  """One CNP run: meta-training on GP functions, then a fixed test set.

  Attributes:
    method: one of :data:`METHODS`.
    iterations: meta-training steps (the notebook: 200,000).
    meta_batch: GP functions per step.
    meta_lr: Adam's learning rate.
    max_context: exclusive bound of the random context and extra-target
      counts (at least 4).
    length_scale: the squared-exponential kernel's length scale.
    encoder_sizes, decoder_sizes: the layer widths; ``None``: the paper's
      (``[128] * 4`` and ``[128] * 2``). For ``np``/``anp``
      ``encoder_sizes`` sets both the latent and the deterministic encoder.
    eval_tasks: test functions (on a 400-point grid, random context subset).
    eval_seed: the test functions' stream.
    eval_batch: test functions per compiled call.
    seed: initialisation and training functions.
    steps_per_call: meta-steps (sampler included) compiled into one call;
      the NaN check, metrics and progress update follow each call.
    checkpoint_every: steps between checkpoints.
    log_every: steps between the points of ``results.json``'s loss curve
      (``metrics.jsonl`` has every step).
    plots: test functions drawn as figures (0: none).
  """
  method: str = "cnp"
  iterations: int = 20_000
  meta_batch: int = 64
  meta_lr: float = 1e-4
  max_context: int = 10
  length_scale: float = 0.4
  encoder_sizes: tuple[int, ...] | None = None
  decoder_sizes: tuple[int, ...] | None = None
  eval_tasks: int = 600
  eval_seed: int = 1
  eval_batch: int = 100
  seed: int = 0
  steps_per_call: int = 100
  checkpoint_every: int = 1_000
  log_every: int = 1_000
  plots: int = 3

  def validate(self) -> None:
    """Raises ``ValueError`` naming the first field with an impossible value.

    Zero iterations are refused: an untrained CNP's likelihood is not a
    result of this experiment.
    """
    common.check_choice("method", self.method, METHODS)
    common.check_int("iterations", self.iterations, 1)
    common.check_int("meta_batch", self.meta_batch, 1)
    common.check_positive("meta_lr", self.meta_lr)
    # gp.sample_counts draws context from U{3, ..., max_context - 1}.
    common.check_int("max_context", self.max_context, 4)
    common.check_positive("length_scale", self.length_scale)
    _check_sizes("encoder_sizes", self.encoder_sizes)
    _check_sizes("decoder_sizes", self.decoder_sizes)
    common.check_int("eval_tasks", self.eval_tasks, 1)
    common.check_int("eval_seed", self.eval_seed, 0)
    common.check_int("eval_batch", self.eval_batch, 1)
    common.check_int("seed", self.seed, 0)
    common.check_int("steps_per_call", self.steps_per_call, 1)
    common.check_int("checkpoint_every", self.checkpoint_every, 1)
    common.check_int("log_every", self.log_every, 1)
    common.check_int("plots", self.plots, 0)


#: the notebook's TRAINING_ITERATIONS.
PAPER_ITERATIONS = 200_000


def default() -> Config:
  """What ``python -m experiments.gp_cnp`` runs: 20,000 steps."""
  return Config()


def paper() -> Config:
  """The notebook's budget: 200,000 meta-steps, everything else default."""
  return Config(iterations=PAPER_ITERATIONS)


def tiny() -> Config:
  """Seconds: few steps, a small CNP, few test tasks (the batch shapes are
  the default's: one compilation)."""
  return Config(iterations=6, meta_batch=4, encoder_sizes=(16, 16),
                decoder_sizes=(16,), eval_tasks=8, eval_batch=4,
                steps_per_call=3, checkpoint_every=3, log_every=3, plots=1)


VARIANTS = {"default": default, "tiny": tiny, "paper": paper}
