"""Multi-layer perceptron (MAML's sinusoid regressor: 1-40-40-1, ReLU)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax


# cbfinn/maml's fully connected init: truncated normal, sd 0.01, zero biases.
MAML_INIT = nn.initializers.truncated_normal(stddev=0.01)


class MLP(nn.Module):
  """Fully connected net: ``(N, d_in) -> (N, num_outputs)``.

  Attributes:
    hidden: widths of the hidden layers.
    num_outputs: output width.
    activation: nonlinearity after each hidden layer.
    kernel_init: weight initialiser (flax's LeCun normal by default;
      :data:`MAML_INIT` is cbfinn/maml's truncated normal with sd 0.01).
    dtype: the computation's dtype (``None``: flax's default); the
      parameters stay float32 and the outputs come back in the input's dtype.
  """
  hidden: Sequence[int] = (40, 40)
  num_outputs: int = 1
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  kernel_init: Any = nn.initializers.lecun_normal()
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    out_dtype = x.dtype
    for i, width in enumerate(self.hidden):
      x = self.activation(nn.Dense(width, kernel_init=self.kernel_init,
                                   dtype=self.dtype, name=f"dense{i}")(x))
    y = nn.Dense(self.num_outputs, kernel_init=self.kernel_init,
                 dtype=self.dtype, name="head")(x)
    return y if self.dtype is None else y.astype(out_dtype)
