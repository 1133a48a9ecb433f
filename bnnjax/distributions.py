"""Log-densities and KL divergences of the few distributions bnnjax needs.

Elementwise and unreduced: callers sum over the axes that make one event.
"""

import math

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(x, mean, std):
  """log N(x; mean, std^2), elementwise."""
  z = (x - mean) / std
  return -0.5 * (z**2 + _LOG_2PI) - jnp.log(std)


def gaussian_kl(mean_q, std_q, mean_p, std_p, log_std_q=None):
  """KL(N(mean_q, std_q^2) || N(mean_p, std_p^2)), elementwise, in closed form.

  log_std_q: log(std_q), where the caller holds it exactly (a log-std parameter):
  it saves a log per element, which is a good part of a Bayesian step's cost.
  """
  log_std_q = jnp.log(std_q) if log_std_q is None else log_std_q
  var_ratio = (std_q / std_p) ** 2
  mean_term = ((mean_q - mean_p) / std_p) ** 2
  return 0.5 * (var_ratio + mean_term - 1.0) - log_std_q + jnp.log(std_p)


def gaussian_cross_entropy(mean_q, std_q, mean_p, std_p):
  """-E_{N(mean_q, std_q^2)}[log N(x; mean_p, std_p^2)], elementwise, in closed form."""
  return 0.5 * _LOG_2PI + jnp.log(std_p) + ((mean_q - mean_p) ** 2 + std_q**2) / (2.0 * std_p**2)


def gaussian_entropy(std=None, log_std=None):
  """Entropy of N(., std^2), elementwise; from std or, without a log, from log_std."""
  if (std is None) == (log_std is None):
    raise ValueError("gaussian_entropy takes exactly one of std and log_std")
  return 0.5 * (1.0 + _LOG_2PI) + (jnp.log(std) if log_std is None else log_std)


def bernoulli_log_prob(logits, x):
  """log Bernoulli(x; sigmoid(logits)) for x in {0, 1} (or [0, 1]), elementwise."""
  return x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)


def categorical_log_prob(logits, labels):
  """log Categorical(labels; softmax(logits)); logits [..., C], int labels [...]."""
  log_p = jax.nn.log_softmax(logits)
  return jnp.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]
