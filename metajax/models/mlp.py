"""Multi-layer perceptron (MAML's sinusoid regressor: 1-40-40-1, ReLU)."""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax


class MLP(nn.Module):
  """Fully connected net: ``(N, d_in) -> (N, num_outputs)``.

  Attributes:
    hidden: widths of the hidden layers.
    num_outputs: output width.
    activation: nonlinearity after each hidden layer.
  """
  hidden: Sequence[int] = (40, 40)
  num_outputs: int = 1
  activation: Callable[[jax.Array], jax.Array] = nn.relu

  @nn.compact
  def __call__(self, x):
    for i, width in enumerate(self.hidden):
      x = self.activation(nn.Dense(width, name=f"dense{i}")(x))
    return nn.Dense(self.num_outputs, name="head")(x)
