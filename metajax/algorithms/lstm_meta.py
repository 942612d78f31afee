"""The LSTM meta-learner (Ravi & Larochelle, 2017): a learned update rule.

A coordinate-wise LSTM, shared by every parameter of the learner network,
replaces gradient descent in the inner loop. Its cell state *is* the
learner's parameter vector. With ``theta_t`` the learner's parameters after
``t`` updates, ``g_t``/``L_t`` the gradient and loss of the support
minibatch at ``theta_{t-1}`` (Sec. 3.2, Eq. 2; the official code's
``getMetaLearnerLSTM``):

    x_t = [pre(L_t), pre(g_t)]                   (per coordinate, 4 numbers)
    h_t = LSTM(x_t, h_{t-1})                     (hidden size 20, shared)
    f_t = W_F [h_t, theta_{t-1}, f_{t-1}] + b_F  (forget gate, pre-sigmoid)
    i_t = W_I [h_t, theta_{t-1}, i_{t-1}] + b_I  (input gate, pre-sigmoid)
    theta_t = sigmoid(f_t) * theta_{t-1} - sigmoid(i_t) * g_t,

``theta_0`` = the meta-learned initial parameters (the cell state's
initial value), ``f_0 = i_0 = 0``. ``pre`` is the preprocessing of
Andrychowicz et al. 2016 with ``p = 10``: ``(log|x| / p, sign(x))`` when
``|x| >= e^-p``, else ``(-1, e^p x)``. With the input gate a constant
``sigmoid(b_I) = alpha`` and the forget gate 1 the update is gradient descent
with step ``alpha``; the code initialises ``b_F`` in [4, 5] and ``b_I`` in
[-5, -4] so that it starts near that, and every other weight uniform in
``+-0.01``.

Meta-training backpropagates the query loss after the last update through
the unrolled updates. The paper (and its code) treat the learner's
gradients and losses as inputs without derivative ("we ignore second
derivatives", Sec. 3.3): ``first_order=True``, the default. The dependence
through the cell state ``theta`` (in the update and the gates) is kept.
``first_order=False`` differentiates through the gradients as well (exact).

The learner's support minibatches: ``inner_batch`` examples at a time, in
order, cycling over the support set (the code: ``nEpochs`` passes of
``batchSize`` 5: 12 updates for 1-shot, 25 for 5-shot); ``None`` uses the
whole support set at every update.

References:
  Ravi & Larochelle, "Optimization as a Model for Few-Shot Learning",
  ICLR 2017. Code: https://github.com/twitter/meta-learning-lstm
  (``model/lstm/meta-learner-lstm.lua``, ``model/lstm/lstm-helper.lua``).
  Andrychowicz et al., "Learning to learn by gradient descent by gradient
  descent", NeurIPS 2016 (the preprocessing).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.flatten_util
import jax.numpy as jnp

from metajax.algorithms.model_learner import ModelLearner
from metajax.core.tasks import Task

#: the preprocessing's ``p``.
PREPROCESS_P = 10.0


def preprocess(x: jax.Array, p: float = PREPROCESS_P) -> jax.Array:
  """``(..., 2)``: ``(log|x| / p, sign(x))`` where ``|x| > e^-p``, else
  ``(-1, e^p x)`` (Andrychowicz et al. 2016, the code's ``preprocess``)."""
  big = jnp.abs(x) > math.exp(-p)
  safe = jnp.where(big, jnp.abs(x), 1.0)
  first = jnp.where(big, jnp.log(safe) / p, -1.0)
  second = jnp.where(big, jnp.sign(x), math.exp(p) * x)
  return jnp.stack([first, second], -1)


def lstm_cell(params, x, h, c):
  """One standard LSTM step on rows ``x`` ``(n, in)`` (gates i, f, o, g)."""
  z = x @ params["wx"] + h @ params["wh"] + params["b"]
  i, f, o, g = jnp.split(z, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  return jax.nn.sigmoid(o) * jnp.tanh(c), c


def meta_lstm_update(gates, h, theta, grad, f_prev, i_prev):
  """The second layer: ``(theta_t, f_t, i_t)`` from the first layer's
  hidden state ``h`` ``(n, H)``, the parameters ``theta`` ``(n,)``, the
  gradient ``grad`` ``(n,)`` and the previous pre-sigmoid gates."""
  f = h @ gates["wf"][:-2] + theta * gates["wf"][-2] + f_prev * gates["wf"][-1]
  i = h @ gates["wi"][:-2] + theta * gates["wi"][-2] + i_prev * gates["wi"][-1]
  f, i = f + gates["bf"], i + gates["bi"]
  return jax.nn.sigmoid(f) * theta - jax.nn.sigmoid(i) * grad, f, i


@dataclasses.dataclass(frozen=True, eq=False)
class LSTMMetaLearner(ModelLearner):
  """Ravi & Larochelle's meta-learner LSTM over a flax learner network.

  Meta-parameters: ``{'model': theta_0, 'lstm': first layer, 'gates':
  W_F, W_I, b_F, b_I}``.

  Attributes:
    inner_steps: learner updates per task at meta-training.
    eval_inner_steps: updates at test (default ``inner_steps``).
    inner_batch: support examples per update (cycled in order); ``None``:
      all of them.
    hidden: the first LSTM layer's size (20).
    first_order: treat the learner's gradients and losses as constants
      (the paper's choice, default); ``False``: exact.
    forget_bias, input_bias: ranges of the gate biases' uniform
      initialisation ((4, 5) and (-5, -4)).
    init_scale: the other meta-learner weights are uniform in
      ``+-init_scale``.
  """
  inner_steps: int = 12
  eval_inner_steps: int | None = None
  inner_batch: int | None = None
  hidden: int = 20
  first_order: bool = True
  forget_bias: tuple[float, float] = (4.0, 5.0)
  input_bias: tuple[float, float] = (-5.0, -4.0)
  init_scale: float = 0.01

  def __post_init__(self):
    super().__post_init__()
    if self.inner_steps < 0:
      raise ValueError(f"inner_steps must be >= 0, got {self.inner_steps}")
    if self.inner_batch is not None and self.inner_batch < 1:
      raise ValueError(f"inner_batch must be at least 1, got "
                       f"{self.inner_batch}")
    if self.hidden < 1:
      raise ValueError(f"hidden must be at least 1, got {self.hidden}")

  @property
  def default_eval_steps(self) -> int:
    return self.eval_inner_steps or self.inner_steps

  def init(self, rng, task: Task):
    k_model, k_x, k_h, k_b, k_wf, k_wi, k_bf, k_bi = jax.random.split(rng, 8)
    s, hid = self.init_scale, self.hidden
    u = lambda k, shape, lo=-s, hi=s: jax.random.uniform(  # noqa: E731
        k, shape, jnp.float32, lo, hi)
    return {
        "model": self.model.init(k_model, task.support_x)["params"],
        "lstm": {"wx": u(k_x, (4, 4 * hid)), "wh": u(k_h, (hid, 4 * hid)),
                 "b": u(k_b, (4 * hid,))},
        "gates": {"wf": u(k_wf, (hid + 2,)), "wi": u(k_wi, (hid + 2,)),
                  "bf": u(k_bf, (), *self.forget_bias),
                  "bi": u(k_bi, (), *self.input_bias)},
    }

  def _batch(self, x, y, t: int):
    if self.inner_batch is None:
      return x, y
    size = x.shape[0]
    per_pass = -(-size // self.inner_batch)
    start = (t % per_pass) * self.inner_batch
    return x[start:start + self.inner_batch], y[start:start + self.inner_batch]

  def adapt(self, params, support_x, support_y, *, steps=None,
            return_trajectory=False):
    """The learner's parameters after ``steps`` meta-learner updates
    (default ``inner_steps``); with ``return_trajectory``, also every
    update's, stacked on a leading axis."""
    steps = self.inner_steps if steps is None else steps
    theta, unravel = jax.flatten_util.ravel_pytree(params["model"])
    n = theta.shape[0]
    h = c = jnp.zeros((n, self.hidden), theta.dtype)
    f_prev = i_prev = jnp.zeros((n,), theta.dtype)
    trajectory = []
    for t in range(steps):
      x, y = self._batch(support_x, support_y, t)
      at = jax.lax.stop_gradient(theta) if self.first_order else theta
      loss, grad = jax.value_and_grad(
          lambda v: self.support_loss(unravel(v), x, y))(at)
      if self.first_order:
        loss, grad = jax.lax.stop_gradient((loss, grad))
      inputs = jnp.concatenate(
          [jnp.broadcast_to(preprocess(loss), (n, 2)), preprocess(grad)], -1)
      h, c = lstm_cell(params["lstm"], inputs, h, c)
      theta, f_prev, i_prev = meta_lstm_update(params["gates"], h, theta, grad,
                                               f_prev, i_prev)
      trajectory.append(theta)
    adapted = unravel(theta)
    if not return_trajectory:
      return adapted
    return adapted, jax.vmap(unravel)(jnp.stack(trajectory))
