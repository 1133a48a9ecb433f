"""The diagonal Fisher of a network's weights: diagonal Laplace's precision, EWC's penalty.

For a likelihood p(y | f(x; θ)) the Fisher is F = Σ_i E_{y ~ p(· | x_i)}[g_i(y) g_i(y)ᵀ] with
g_i(y) = ∇_θ log p(y | x_i, θ); for the categorical and Gaussian likelihoods it equals the
generalised Gauss-Newton Σ_i J_iᵀ H_i J_i, so its diagonal is the GGN's:

    classifier:  F_jj = Σ_i Σ_c p_ic (∂ log p_ic / ∂θ_j)²          (C backward passes per example)
    regressor:   F_jj = Σ_i (∂f_i / ∂θ_j)² / noise_std²

Exact (every class, not a sampled label nor the empirical Fisher of the observed labels).
`diagonal_fisher` sums over the rows it is given (a random subset scaled by N / n estimates
the sum over N rows).
"""

from typing import Callable, Iterator, Tuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np


def _example_fisher(apply: Callable, params, x1, classification: bool, noise_std: float):
  """The Fisher diagonal of one example x1 [1, ...], a pytree like params."""
  if classification:
    log_probs = lambda p: jax.nn.log_softmax(apply(p, x1)[0])  # noqa: E731
    grads = jax.jacrev(log_probs)(params)  # leaves [C, ...]
    probs = jnp.exp(log_probs(params))
    return jax.tree_util.tree_map(lambda g: jnp.tensordot(probs, g * g, axes=1), grads)
  grad = jax.grad(lambda p: apply(p, x1)[0, 0])(params)
  return jax.tree_util.tree_map(lambda g: g * g / noise_std**2, grad)


def padded_chunks(x, chunk_size: int) -> Iterator[Tuple[jax.Array, jax.Array]]:
  """(xb [chunk_size, ...], weight [chunk_size]) over the rows of x: the last chunk padded with
  copies of its last row (one compilation for every chunk), weight 1 on real rows, 0 on padding."""
  for start in range(0, len(x), chunk_size):
    xb = np.asarray(x[start : start + chunk_size])
    n = len(xb)
    if n < chunk_size:
      xb = np.concatenate([xb, np.repeat(xb[-1:], chunk_size - n, 0)])
    yield jnp.asarray(xb), jnp.asarray((np.arange(chunk_size) < n).astype(np.float32))


def diagonal_fisher(
  forward: Callable, params, x, classification: bool, noise_std: float = 1.0, chunk_size: int = 16
):
  """Σ_i diag F_i over the rows of x, a pytree shaped like params.

  Args:
    forward: a Haiku function x [B, ...] -> outputs [B, C] (logits; [B, 1] for regression).
    params: its Haiku params (the point at which the Fisher is taken, e.g. the MAP).
    x: inputs [N, ...] (numpy or jax).
    classification: categorical likelihood (else Gaussian with noise_std).
    chunk_size: examples per vmapped batch (memory: chunk_size × C × number of weights).
  """
  apply = hk.without_apply_rng(hk.transform(forward)).apply
  x = np.asarray(x, np.float32)
  one = lambda x1: _example_fisher(apply, params, x1[None], classification, noise_std)  # noqa: E731

  @jax.jit
  def chunk_sum(xb, weight):
    per_example = jax.vmap(one)(xb)
    return jax.tree_util.tree_map(lambda f: jnp.tensordot(weight, f, axes=1), per_example)

  total = jax.tree_util.tree_map(jnp.zeros_like, params)
  for xb, weight in padded_chunks(x, chunk_size):
    total = jax.tree_util.tree_map(jnp.add, total, chunk_sum(xb, weight))
  return total
