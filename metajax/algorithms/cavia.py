"""CAVIA (Zintgraf et al., 2019): fast context adaptation.

The network's weights ``theta`` are meta-learned and fixed within a task;
only a small vector of context parameters ``phi``, concatenated to the
network's input (:class:`metajax.models.WithContext`), adapts. For every
task the context restarts at zero:

    phi_0 = 0,  phi_{k+1} = phi_k - alpha * grad_phi L_S(theta, phi_k),
    meta-objective = mean over tasks of L_Q(theta, phi_K),

differentiated in ``theta`` through the inner steps (exact second order, or
first order with ``first_order=True``). It is MAML's inner loop with the
adapt mask on the context and the context reset before adapting: the
context's meta-gradient is therefore zero and its meta-parameter stays at
its initial zero (under any optimiser whose update of a zero gradient is
zero, e.g. Adam or SGD).

References:
  Zintgraf, Shiarlis, Kurin, Hofmann & Whiteson, "Fast Context Adaptation
  via Meta-Learning", ICML 2019, arXiv:1810.03642 (Algorithm 1); code
  lmzintgraf/cavia (``regression/cavia.py``: ``reset_context_params``
  before each task's inner loop).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from metajax.algorithms.maml import MAML
from metajax.models.context import CONTEXT, WithContext


def context_only(path: str) -> bool:
  """CAVIA's adapt mask: the context parameters only."""
  return path == CONTEXT


@dataclasses.dataclass(frozen=True, eq=False)
class CAVIA(MAML):
  """MAML whose inner loop adapts only input context parameters, reset to
  zero for every task.

  ``model`` is wrapped in :class:`~metajax.models.WithContext` with
  ``num_context`` parameters unless it already is one. Every MAML option
  (``inner_steps``, ``inner_lr``, ``first_order``, ``remat``, ...) applies;
  ``adapt_mask`` defaults to the context alone.

  Attributes:
    num_context: context parameters concatenated to the input (the
      regression code's default is 5).
  """
  num_context: int = 5

  def __post_init__(self):
    if self.num_context < 1:
      raise ValueError(f"num_context must be at least 1, got "
                       f"{self.num_context}")
    if not isinstance(self.model, WithContext):
      object.__setattr__(self, "model",
                         WithContext(self.model, self.num_context))
    if self.adapt_mask is None:
      object.__setattr__(self, "adapt_mask", context_only)
    super().__post_init__()

  def reset_context(self, params):
    """``params`` with the model's context set to zero (CAVIA's per-task
    start)."""
    model = dict(params["model"])
    model[CONTEXT] = jnp.zeros_like(model[CONTEXT])
    return {**params, "model": model}

  def adapt(self, params, support_x, support_y, *, steps=None,
            return_trajectory=False):
    """The adapted parameters: the context after ``steps`` inner steps from
    zero, every other parameter as in ``params``."""
    return super().adapt(self.reset_context(params), support_x, support_y,
                         steps=steps, return_trajectory=return_trajectory)

  def pre_metrics(self, model_params, task):
    # the unadapted network is the one with a zero context
    return super().pre_metrics(
        self.reset_context({"model": model_params})["model"], task)


__all__ = ["CAVIA", "context_only"]
