"""A model whose input carries task-specific context parameters (CAVIA).

:class:`WithContext` concatenates a vector of ``num_context`` parameters,
named ``context`` in the parameter tree, to every input example along its
last axis: a feature vector ``(N, d)`` becomes ``(N, d + c)`` (CAVIA's
regression network); an image ``(N, H, W, C)`` gets ``c`` constant channels.
The wrapped model's parameters sit under ``model``. The context starts at
zero; :class:`metajax.algorithms.cavia.CAVIA` adapts it alone and resets it
for every task.

References:
  Zintgraf, Shiarlis, Kurin, Hofmann & Whiteson, "Fast Context Adaptation
  via Meta-Learning", ICML 2019 (Sec. 3); code lmzintgraf/cavia
  (``regression/cavia_model.py``: ``torch.cat((x, context_params))``).
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

#: the context's name in the parameter tree.
CONTEXT = "context"


class WithContext(nn.Module):
  """``model`` applied to its input concatenated with context parameters.

  Attributes:
    model: the wrapped flax module.
    num_context: the number of context parameters.
  """
  model: nn.Module
  num_context: int

  @nn.compact
  def __call__(self, x):
    context = self.param(CONTEXT, nn.initializers.zeros, (self.num_context,))
    c = jnp.broadcast_to(context.astype(x.dtype),
                         x.shape[:-1] + (self.num_context,))
    return self.model(jnp.concatenate([x, c], axis=-1))

  @property
  def num_outputs(self):
    return getattr(self.model, "num_outputs", None)

  @property
  def example_ndim(self):
    from metajax.algorithms.model_learner import model_example_ndim
    return model_example_ndim(self.model)
