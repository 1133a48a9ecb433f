"""Log-densities and KL divergences of the few distributions bnnjax needs.

Elementwise and unreduced: callers sum over the axes that make one event.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal(rng: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """Standard normals of `shape`, drawn by XLA's own ThreeFry generator keyed by `rng`.

  The distribution of jax.random.normal (32 random bits -> a uniform on (-1, 1) -> sqrt(2)
  erfinv), at a fraction of its cost on CPU: jax.random builds ThreeFry from jnp operations
  (about 5x slower there than XLA's RngBitGenerator, measured), and a Bayesian step or a
  K-sample predictive draws a normal per pre-activation or per weight. The stream is a pure
  function of `rng` on a given backend and XLA version (not across them, unlike
  jax.random's). Under jax.vmap over keys the draws stay independent (JAX batches the
  generator as one larger draw).

  Args:
    rng: a jax.random key.
    shape: the output's shape.
    dtype: a floating dtype.
  Returns:
    [*shape] standard normal draws.
  """
  state = jax.random.bits(rng, (4,), jnp.uint32)
  _, bits = jax.lax.rng_bit_generator(
    state, tuple(shape), dtype=jnp.uint32, algorithm=jax.lax.RandomAlgorithm.RNG_THREE_FRY
  )
  # The top 23 bits as the mantissa of a float in [1, 2), then a uniform on [lo, 1).
  unit = jax.lax.bitcast_convert_type((bits >> 9) | np.uint32(0x3F800000), jnp.float32) - 1.0
  lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
  uniform = jnp.maximum(lo, unit * (1.0 - lo) + lo)
  return (np.float32(math.sqrt(2.0)) * jax.lax.erf_inv(uniform)).astype(dtype)


def gaussian_log_prob(x, mean, std):
  """log N(x; mean, std^2), elementwise."""
  z = (x - mean) / std
  return -0.5 * (z**2 + _LOG_2PI) - jnp.log(std)


def gaussian_kl(mean_q, std_q, mean_p, std_p, log_std_q=None, var_q=None):
  """KL(N(mean_q, std_q^2) || N(mean_p, std_p^2)), elementwise, in closed form.

  log_std_q: log(std_q), where the caller holds it exactly (a log-std parameter):
  it saves a log per element, which is a good part of a Bayesian step's cost.
  var_q: std_q^2, where the caller holds it (then std_q may be None): exp(2 log_std) shares
  its exp with the variance path of local reparameterisation, where (exp(log_std))^2 gets a
  second exp from XLA:CPU for its gradient.
  """
  log_std_q = jnp.log(std_q) if log_std_q is None else log_std_q
  var_ratio = (std_q / std_p) ** 2 if var_q is None else var_q / std_p**2
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
