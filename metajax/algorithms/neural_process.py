"""Latent Neural Processes and Attentive Neural Processes for regression.

Both follow DeepMind's neural-processes notebook (``LatentModel``), the
CNP's sibling models on the same GP tasks (:mod:`metajax.algorithms.cnp`):

* a **latent path**: ``s_i = MLP_s([x_i, y_i])`` averaged over a set, a ReLU
  layer of ``(S + L) // 2`` units, then ``mu`` and ``sigma = 0.1 + 0.9
  sigmoid(.)``: ``q(z | set) = N(mu, sigma^2)`` with ``L`` latents;
* a **deterministic path**: ``r_i = MLP_r([x_i, y_i])`` over the context,
  aggregated for each target ``x*`` by ``attention``: ``'uniform'`` (the
  mean, the Neural Process of Garnelo et al. 2018b as the notebook's
  ``MODEL_TYPE='NP'``) or ``'multihead'`` (the ANP of Kim et al. 2019:
  queries ``MLP_a(x*)``, keys ``MLP_a(x_i)``, values ``r_i``, 8 heads of
  scaled dot-product attention with bias-free projections, the heads'
  outputs projected back and summed);
* a **decoder** ``[r*(x*), z, x*] -> (mu, sigma = 0.1 + 0.9 softplus(.))``.

Training maximises the notebook's ELBO, with the targets containing the
context (:mod:`metajax.data.gp` draws them so):

    z ~ q(z | targets),
    ELBO = 1/|T| sum_t log N(y_t; mu(x_t, z), sigma^2)
           - KL(q(z | targets) || q(z | context)) / |T|,

one reparameterised sample per task. The loss is ``-ELBO``. The sample's key
is ``fold_in(PRNGKey(seed), iteration)`` folded with a fingerprint of the
task's targets, so a meta-batch's tasks draw different noise and a run is
reproducible (the learner contract passes no key).

Evaluation (``evaluate``) draws ``eval_samples`` latents from the prior
``q(z | context)`` (a fixed key per task, from its data) and reports per
target the log of the Monte-Carlo predictive density ``log 1/K sum_k
N(y_t; mu_k, sigma_k^2)`` (``loss`` is its negative mean) and the squared
error of the mixture mean. ``predict`` returns the mixture's mean and
standard deviation (the bands of the figures).

Padding points (inputs all ``NaN``) are masked out of every mean and every
attention, as in the CNP.

References:
  Garnelo, Schwarz, Rosenbaum, Viola, Rezende, Eslami & Teh, "Neural
  Processes", ICML 2018 workshop, arXiv:1807.01622.
  Kim, Mnih, Schwarz, Garnelo, Eslami, Rosenbaum, Vinyals & Teh, "Attentive
  Neural Processes", ICLR 2019.
  Code: https://github.com/deepmind/neural-processes
  (``attentive_neural_process.ipynb``: ``LatentEncoder``,
  ``DeterministicEncoder``, ``Decoder``, ``LatentModel``,
  ``multihead_attention``; ``HIDDEN_SIZE = 128``, Adam 1e-4).
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metajax import configs
from metajax.algorithms.cnp import (Normal, _zero_padding, gaussian_log_prob,
                                    masked_mean, point_mask)
from metajax.core.learner import Learner
from metajax.core.tasks import Task

ATTENTIONS = ("uniform", "multihead")
_GP = configs.get("np", "gp_1d").learner


def _run(layers, h):
  """``layers`` in turn, ReLU between them (the last one linear)."""
  for i, layer in enumerate(layers):
    h = layer(h)
    if i < len(layers) - 1:
      h = nn.relu(h)
  return h


def gaussian_kl(mu_q, sigma_q, mu_p, sigma_p) -> jax.Array:
  """``KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2))`` summed over the last
  axis."""
  return jnp.sum(jnp.log(sigma_p / sigma_q)
                 + (sigma_q ** 2 + (mu_q - mu_p) ** 2) / (2 * sigma_p ** 2)
                 - 0.5, -1)


def attention_weights(queries, keys, mask) -> jax.Array:
  """``(..., M, N)`` softmax weights of scaled dot products, ``0`` on the
  keys where ``mask`` (``(..., N)``) is False; rows sum to 1."""
  logits = queries @ jnp.swapaxes(keys, -1, -2) / math.sqrt(queries.shape[-1])
  logits = jnp.where(mask[..., None, :], logits, -jnp.inf)
  return jax.nn.softmax(logits, axis=-1)


class NPModel(nn.Module):
  """The (A)NP networks; see the module docstring."""
  latent_sizes: Sequence[int]
  num_latents: int
  deterministic_sizes: Sequence[int]
  decoder_sizes: Sequence[int]
  attention: str = "uniform"
  attention_sizes: Sequence[int] = (128, 128)
  num_heads: int = 8
  y_dim: int = 1

  def setup(self):
    self.latent_mlp = [nn.Dense(w) for w in self.latent_sizes]
    self.latent_penultimate = nn.Dense(
        (self.latent_sizes[-1] + self.num_latents) // 2)
    self.latent_mean = nn.Dense(self.num_latents)
    self.latent_std = nn.Dense(self.num_latents)
    self.deterministic_mlp = [nn.Dense(w) for w in self.deterministic_sizes]
    if self.attention == "multihead":
      d_k, d_v = self.attention_sizes[-1], self.deterministic_sizes[-1]
      head = d_v // self.num_heads
      k_init = nn.initializers.normal(d_k ** -0.5)
      v_init = nn.initializers.normal(d_v ** -0.5)
      # the notebook's rep='mlp': one MLP for keys and queries
      self.attention_mlp = [nn.Dense(w) for w in self.attention_sizes]
      dense = lambda n, init: [nn.Dense(n, use_bias=False,  # noqa: E731
                                        kernel_init=init)
                               for _ in range(self.num_heads)]
      self.wq, self.wk, self.wv = (dense(head, k_init), dense(head, k_init),
                                   dense(head, k_init))
      self.wo = dense(d_v, v_init)
    self.decoder = [nn.Dense(w) for w in
                    (*self.decoder_sizes, 2 * self.y_dim)]

  def latent(self, x, y):
    """``(mu, sigma)`` of ``q(z | {(x_i, y_i)})`` over the real points."""
    mask = point_mask(x)
    h = jnp.concatenate([_zero_padding(x, mask), _zero_padding(y, mask)], -1)
    h = masked_mean(_run(self.latent_mlp, h), mask[..., None], -2)
    h = nn.relu(self.latent_penultimate(h))
    return (self.latent_mean(h),
            0.1 + 0.9 * nn.sigmoid(self.latent_std(h)))

  def deterministic(self, context_x, context_y, target_x, *,
                    return_weights=False):
    """``(T, R)`` representation of the context for each target input
    (with ``return_weights``, also the ``(heads, T, N)`` attention
    weights)."""
    mask = point_mask(context_x)
    cx = _zero_padding(context_x, mask)
    r = _run(self.deterministic_mlp,
             jnp.concatenate([cx, _zero_padding(context_y, mask)], -1))
    if self.attention == "uniform":
      rep = masked_mean(r, mask[..., None], -2)
      out = jnp.broadcast_to(rep, target_x.shape[:-1] + rep.shape[-1:])
      weights = jnp.broadcast_to(mask / jnp.maximum(jnp.sum(mask), 1),
                                 target_x.shape[:-1] + mask.shape)
      return (out, weights[None].astype(r.dtype)) if return_weights else out
    keys = _run(self.attention_mlp, cx)
    queries = _run(self.attention_mlp, target_x)
    out, all_weights = 0.0, []
    for wq, wk, wv, wo in zip(self.wq, self.wk, self.wv, self.wo):
      w = attention_weights(wq(queries), wk(keys), mask)
      all_weights.append(w)
      out = out + wo(w @ wv(r))
    return (out, jnp.stack(all_weights)) if return_weights else out

  def decode(self, rep, z, target_x) -> Normal:
    """``Normal`` at ``target_x`` ``(T, dx)`` given ``rep`` ``(T, R)`` and
    one latent ``z`` ``(L,)``."""
    zt = jnp.broadcast_to(z, target_x.shape[:-1] + z.shape[-1:])
    out = _run(self.decoder, jnp.concatenate([rep, zt, target_x], -1))
    mean, s = out[..., :self.y_dim], out[..., self.y_dim:]
    return Normal(mean, 0.1 + 0.9 * nn.softplus(s))

  def __call__(self, context_x, context_y, target_x, target_y):
    mu, _ = self.latent(target_x, target_y)
    rep = self.deterministic(context_x, context_y, target_x)
    return self.decode(rep, mu, target_x)


class NPState(NamedTuple):
  """What :meth:`NeuralProcess.adapt` returns: the context and the prior."""
  context_x: jax.Array
  context_y: jax.Array
  prior_mean: jax.Array
  prior_std: jax.Array


def _fingerprint(a: jax.Array) -> jax.Array:
  """A uint32 from a task's values (its noise key), padding ignored."""
  bits = jax.lax.bitcast_convert_type(
      jnp.nan_to_num(a).astype(jnp.float32), jnp.uint32)
  return jnp.sum(bits * (jnp.arange(bits.size, dtype=jnp.uint32)
                         .reshape(bits.shape) + 1))


@dataclasses.dataclass(frozen=True, eq=False)
class NeuralProcess(Learner):
  """Latent NP (``attention='uniform'``) or ANP (``'multihead'``).

  Attributes:
    latent_sizes, deterministic_sizes, decoder_sizes: MLP widths
      (``[128] * 4``, ``[128] * 4``, ``[128] * 2``; the decoder's output layer
      of ``2 * y_dim`` follows).
    num_latents: ``L`` (128).
    attention: one of :data:`ATTENTIONS`.
    attention_sizes: the ANP's query/key MLP (``[128] * 2``).
    num_heads: the ANP's heads (8).
    eval_samples: latents per task in ``evaluate`` and ``predict``.
    seed: the ELBO's and evaluation's noise (see the module docstring).
  """
  latent_sizes: Sequence[int] = tuple(_GP["latent_sizes"])
  num_latents: int = _GP["num_latents"]
  deterministic_sizes: Sequence[int] = tuple(_GP["deterministic_sizes"])
  decoder_sizes: Sequence[int] = tuple(_GP["decoder_sizes"])
  attention: str = "uniform"
  attention_sizes: Sequence[int] = tuple(_GP["attention_sizes"])
  num_heads: int = 8
  eval_samples: int = 16
  seed: int = 0

  classification = False

  def __post_init__(self):
    if self.attention not in ATTENTIONS:
      raise ValueError(f"unknown attention {self.attention!r}; choose one of "
                       f"{ATTENTIONS}")
    if not self.latent_sizes or not self.deterministic_sizes:
      raise ValueError("latent_sizes and deterministic_sizes must name at "
                       "least one layer")
    if (self.attention == "multihead"
        and self.deterministic_sizes[-1] % self.num_heads):
      raise ValueError(
          f"num_heads ({self.num_heads}) must divide the representation "
          f"size ({self.deterministic_sizes[-1]})")
    if self.eval_samples < 1:
      raise ValueError(f"eval_samples must be at least 1, got "
                       f"{self.eval_samples}")

  def model(self, y_dim: int = 1) -> NPModel:
    return NPModel(tuple(self.latent_sizes), self.num_latents,
                   tuple(self.deterministic_sizes), tuple(self.decoder_sizes),
                   self.attention, tuple(self.attention_sizes),
                   self.num_heads, y_dim)

  def _apply(self, params, *args, method):
    return self.model(_y_dim(params)).apply({"params": params["model"]},
                                            *args, method=method)

  def init(self, rng, task: Task):
    if np.ndim(task.support_x) != 2 or np.ndim(task.support_y) != 2:
      raise ValueError(
          f"NP inputs and targets must be (points, dims), got "
          f"{np.shape(task.support_x)} and {np.shape(task.support_y)}")
    model = self.model(np.shape(task.support_y)[-1])
    return {"model": model.init(rng, task.support_x, task.support_y,
                                task.query_x, task.query_y)["params"]}

  def adapt(self, params, support_x, support_y, *, steps=None) -> NPState:
    """The context and the prior ``q(z | context)`` (``steps`` ignored)."""
    del steps
    mu, sigma = self._apply(params, support_x, support_y,
                            method=NPModel.latent)
    return NPState(support_x, support_y, mu, sigma)

  def _samples(self, state: NPState, key) -> jax.Array:
    eps = jax.random.normal(key, (self.eval_samples,) + state.prior_mean.shape,
                            state.prior_mean.dtype)
    return state.prior_mean + state.prior_std * eps

  def _mixture(self, params, state: NPState, x, key):
    rep = self._apply(params, state.context_x, state.context_y, x,
                      method=NPModel.deterministic)
    zs = self._samples(state, key)
    return jax.vmap(lambda z: self._apply(params, rep, z, x,
                                          method=NPModel.decode))(zs)

  def _eval_key(self, state: NPState):
    return jax.random.fold_in(jax.random.PRNGKey(self.seed + 1),
                              _fingerprint(state.context_y))

  def predict(self, params, state: NPState, x) -> Normal:
    """The Monte-Carlo predictive mixture's mean and standard deviation at
    ``x`` (``eval_samples`` latents from the prior)."""
    mix = self._mixture(params, state, x, self._eval_key(state))
    mean = jnp.mean(mix.mean, 0)
    var = jnp.mean(mix.stddev ** 2 + mix.mean ** 2, 0) - mean ** 2
    return Normal(mean, jnp.sqrt(jnp.maximum(var, 0.0)))

  def elbo_terms(self, params, task: Task, key):
    """``(mean target log-likelihood at one z ~ q(z | targets), KL(q(z |
    targets) || q(z | context)))`` of one task."""
    mask = point_mask(task.query_x)
    qx = _zero_padding(task.query_x, mask)
    qy = _zero_padding(task.query_y, mask)
    mu_q, sd_q = self._apply(params, task.query_x, task.query_y,
                             method=NPModel.latent)
    mu_p, sd_p = self._apply(params, task.support_x, task.support_y,
                             method=NPModel.latent)
    z = mu_q + sd_q * jax.random.normal(key, mu_q.shape, mu_q.dtype)
    rep = self._apply(params, task.support_x, task.support_y, qx,
                      method=NPModel.deterministic)
    pred = self._apply(params, rep, z, qx, method=NPModel.decode)
    lp = jnp.sum(gaussian_log_prob(qy, pred.mean, pred.stddev), -1)
    return masked_mean(lp, mask), gaussian_kl(mu_q, sd_q, mu_p, sd_p)

  def task_loss(self, params, task: Task, *, iteration=0):
    """``-ELBO`` (the KL divided by the number of targets), with ``loss``,
    ``log_likelihood`` and ``kl`` metrics."""
    key = jax.random.fold_in(
        jax.random.fold_in(jax.random.PRNGKey(self.seed), iteration),
        _fingerprint(task.query_y))
    log_p, kl = self.elbo_terms(params, task, key)
    n = jnp.maximum(jnp.sum(point_mask(task.query_x)), 1).astype(log_p.dtype)
    loss = -(log_p - kl / n)
    return loss, {"loss": loss, "log_likelihood": log_p, "kl": kl}

  def metrics(self, mix: Normal, y, mask) -> dict:
    """``loss`` (minus the mean per-target log predictive density of the
    mixture ``mix``, leading axis = samples) and ``mse`` of its mean."""
    lp = jnp.sum(gaussian_log_prob(y[None], mix.mean, mix.stddev), -1)
    log_density = jax.nn.logsumexp(lp, 0) - math.log(lp.shape[0])
    se = jnp.mean(jnp.square(jnp.mean(mix.mean, 0) - y), -1)
    return {"loss": -masked_mean(log_density, mask),
            "mse": masked_mean(se, mask)}

  def evaluate(self, params, task: Task, *, steps=None):
    """Target ``loss`` (negative Monte-Carlo predictive log-likelihood per
    target) and ``mse``, each ``(1,)``."""
    del steps
    mask = point_mask(task.query_x)
    state = self.adapt(params, task.support_x, task.support_y)
    mix = self._mixture(params, state, _zero_padding(task.query_x, mask),
                        self._eval_key(state))
    m = self.metrics(mix, _zero_padding(task.query_y, mask), mask)
    return jax.tree_util.tree_map(lambda a: a[None], m)


def _y_dim(params) -> int:
  """Target dimension, read off the decoder's output layer."""
  last = max((k for k in params["model"] if k.startswith("decoder_")),
             key=lambda k: int(k.split("_")[-1]))
  return params["model"][last]["bias"].shape[-1] // 2
