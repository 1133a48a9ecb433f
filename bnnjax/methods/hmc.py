"""The reference posterior: full-batch NUTS (blackjax) over a network's flattened weights.

Small problems only (toy regression, diabetes, a two-class toy): every step runs the network
on the whole training set, so a data set of more than `FULL_BATCH_LIMIT` examples is refused.

    log p(w | D) = Σ_i log p(y_i | x_i, w) + Σ_j log N(w_j; 0, prior_scale²) + const

`nuts_posterior` runs several chains (one after another, one compilation), each warmed up
by blackjax's window adaptation (step size and a diagonal or dense mass matrix, target
acceptance 0.8), and reports the split-R-hat and effective sample size of every coordinate
(blackjax.diagnostics). `network_posterior` builds the log density of a Haiku network on a
data set and returns the samples as Haiku params; `predictor` is their predictive (every
sample a draw, K = S), the one a deep ensemble uses. `agreement` compares an approximate
method's predictive probabilities with the NUTS ones (top-1 agreement and total variation,
as Izmailov et al. 2021 do).

This is not a loop-trained Method (the train loop's steps are minibatch gradient steps; NUTS
needs the full data set at every step), so it is called as functions.
"""

from typing import Any, Callable, NamedTuple, Optional, Tuple

import blackjax
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from bnnjax import distributions
from bnnjax.methods import ensemble
from bnnjax.task import DataInfo, Predictor

FULL_BATCH_LIMIT = 10_000  # examples; NUTS evaluates the whole data set at every leapfrog step


class NUTSResult(NamedTuple):
  """Draws of several NUTS chains and their diagnostics.

  samples: pytree like `init`, each leaf [num_chains, num_samples, ...].
  rhat: pytree like `init`: split-R-hat of each coordinate (about 1 when the chains agree).
  ess: pytree like `init`: effective sample size of each coordinate, over all chains.
  acceptance: [num_chains] mean acceptance rate after warm-up.
  divergences: [num_chains] divergent transitions after warm-up.
  step_size: [num_chains] the adapted step sizes.
  """

  samples: Any
  rhat: Any
  ess: Any
  acceptance: jax.Array
  divergences: jax.Array
  step_size: jax.Array


def check_sampler_args(num_chains: int, num_samples: int, num_warmup: int) -> None:
  """One-line ValueErrors for chain counts R-hat cannot use and empty runs."""
  for name, value, least in (
    ("num_chains", num_chains, 2),
    ("num_samples", num_samples, 4),
    ("num_warmup", num_warmup, 1),
  ):
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
      raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def _run_chain(
  log_prob: Callable,
  position,
  rng,
  num_warmup: int,
  num_samples: int,
  target_acceptance: float,
  dense_mass: bool,
  max_num_doublings: int,
):
  """One chain: window adaptation, then num_samples NUTS steps; (positions [S, ...], logdensity
  [S], acceptance [S], divergent [S], step size)."""
  warm_key, sample_key = jax.random.split(rng)
  adaptation = blackjax.window_adaptation(
    blackjax.nuts,
    log_prob,
    is_mass_matrix_diagonal=not dense_mass,
    target_acceptance_rate=target_acceptance,
    max_num_doublings=max_num_doublings,
  )
  (state, parameters), _ = adaptation.run(warm_key, position, num_warmup)
  kernel = blackjax.nuts(log_prob, **parameters).step

  def step(state, key):
    state, info = kernel(key, state)
    return state, (state.position, state.logdensity, info.acceptance_rate, info.is_divergent)

  _, draws = jax.lax.scan(step, state, jax.random.split(sample_key, num_samples))
  return (*draws, parameters["step_size"])


def diagnostics(samples):
  """(rhat, ess) pytrees of draws [num_chains, num_samples, ...] (blackjax.diagnostics)."""
  rhat = jax.tree_util.tree_map(blackjax.diagnostics.potential_scale_reduction, samples)
  ess = jax.tree_util.tree_map(blackjax.diagnostics.effective_sample_size, samples)
  return rhat, ess


def nuts_posterior(
  log_prob: Callable,
  init,
  rng: jax.Array,
  num_chains: int = 4,
  num_samples: int = 500,
  num_warmup: int = 500,
  init_jitter: float = 0.1,
  target_acceptance: float = 0.8,
  dense_mass: bool = False,
  max_num_doublings: int = 10,
) -> NUTSResult:
  """Samples exp(log_prob) by NUTS: num_chains chains from init + init_jitter * N(0, I).

  Args:
    log_prob: a pytree position (like `init`) -> scalar unnormalised log density.
    init: one starting position (a pytree of arrays); each chain starts from a jittered copy.
    rng: a PRNG key.
    num_chains, num_samples, num_warmup: chains (>= 2, for R-hat), kept draws per chain,
      window-adaptation steps per chain.
    init_jitter: the std of each chain's offset from init.
    target_acceptance: the window adaptation's target mean acceptance rate.
    dense_mass: adapt a dense mass matrix (d² memory; for small, correlated problems)
      rather than a diagonal one.
    max_num_doublings: NUTS's largest trajectory, 2^max_num_doublings - 1 leapfrog steps.
  Returns:
    NUTSResult (see its fields). A one-line ValueError if log_prob is not finite at init,
    or if any draw or its log density is not finite (a diverged sampler).
  """
  check_sampler_args(num_chains, num_samples, num_warmup)
  if not np.isfinite(float(log_prob(init))):
    raise ValueError("NUTS: log_prob at the initial position is not finite")
  flat, unravel = ravel_pytree(init)
  flat_log_prob = lambda w: log_prob(unravel(w))
  jitter_key, chain_key = jax.random.split(rng)
  starts = flat + init_jitter * jax.random.normal(jitter_key, (num_chains, flat.size), flat.dtype)
  # The chains run one after another through one compiled chain (a vmap over chains
  # compiles NUTS's batched while loops about 1.5x slower; these problems are small).
  chain = jax.jit(
    lambda w, key: _run_chain(
      flat_log_prob, w, key, num_warmup, num_samples, target_acceptance, dense_mass, max_num_doublings
    )
  )
  runs = [chain(start, key) for start, key in zip(starts, jax.random.split(chain_key, num_chains))]
  positions, logdensity, acceptance, divergent, step_size = (jnp.stack(parts) for parts in zip(*runs))
  if not (np.all(np.isfinite(positions)) and np.all(np.isfinite(logdensity))):
    raise ValueError("NUTS diverged: a draw or its log density is not finite")
  samples = jax.vmap(jax.vmap(unravel))(positions)
  rhat, ess = diagnostics(samples)
  return NUTSResult(samples, rhat, ess, acceptance.mean(1), divergent.sum(1), step_size)


def check_full_batch(num_examples: int) -> None:
  """A one-line ValueError for a data set too large for full-batch NUTS."""
  if num_examples > FULL_BATCH_LIMIT:
    raise ValueError(
      f"HMC/NUTS runs full batch: {num_examples} training examples exceed the "
      f"limit of {FULL_BATCH_LIMIT}; use a smaller data set or another method"
    )


def gamma_precision_log_prior(log_std, a: float, b: float):
  """log p(log σ) when the precision τ = 1/σ² ~ Gamma(shape a, rate b): the Gamma log density
  of τ plus log |dτ / d log σ| = log 2τ (NUTS moves log σ, unconstrained)."""
  precision = jnp.exp(-2.0 * log_std)
  log_gamma = a * jnp.log(b) - jax.scipy.special.gammaln(a) + (a - 1.0) * jnp.log(precision) - b * precision
  return log_gamma + jnp.log(2.0 * precision)


def network_log_posterior(
  forward: Callable,
  info: DataInfo,
  x,
  y,
  prior_scale: float = 1.0,
  noise_std: float = 1.0,
  noise_prior: Optional[Tuple[float, float]] = None,
) -> Callable:
  """The log posterior of a network's weights (and its noise std) on all of (x, y).

      params -> log p(y | x, params) + log N(params; 0, prior_scale² I)

  Args:
    forward: a Haiku function x [N, *input_shape] -> outputs [N, C] ([N, 1] for regression).
    info: num_classes = 0 for a Gaussian likelihood of std noise_std, >= 2 for a categorical.
    x, y: the whole training set, N <= FULL_BATCH_LIMIT.
    noise_std: the Gaussian likelihood's fixed std (regression, noise_prior None).
    noise_prior: None, or (a, b) for a regressor whose noise std is sampled with the weights:
      its precision 1/σ² ~ Gamma(a, rate b) (Hernández-Lobato & Adams 2015 use (6, 6) on
      standardised targets); the position is then (params, log σ) and the density
      (`gamma_precision_log_prior`) is in log σ.
  """
  check_full_batch(len(x))
  if not prior_scale > 0 or not noise_std > 0:
    raise ValueError(f"prior_scale and noise_std must be positive, got {prior_scale}, {noise_std}")
  classification = ensemble.check_outputs(info)
  if noise_prior is not None and (classification or not min(noise_prior) > 0):
    raise ValueError(f"noise_prior (a, b) needs a regressor and a, b > 0, got {noise_prior}")
  net = hk.without_apply_rng(hk.transform(forward))
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y)
  y = y if classification else y.reshape(len(y)).astype(jnp.float32)

  def log_joint(params, noise):
    outputs = net.apply(params, x)
    if classification:
      log_lik = distributions.categorical_log_prob(outputs, y).sum()
    else:
      log_lik = distributions.gaussian_log_prob(y, outputs[:, 0], noise).sum()
    log_prior = sum(
      distributions.gaussian_log_prob(w, 0.0, prior_scale).sum() for w in jax.tree_util.tree_leaves(params)
    )
    return log_lik + log_prior

  if noise_prior is None:
    return lambda params: log_joint(params, noise_std)

  def log_posterior(position):
    params, log_std = position
    return log_joint(params, jnp.exp(log_std)) + gamma_precision_log_prior(log_std, *noise_prior)

  return log_posterior


def network_posterior(
  forward: Callable,
  info: DataInfo,
  x,
  y,
  rng: jax.Array,
  *,
  prior_scale: float = 1.0,
  noise_std: float = 1.0,
  noise_prior: Optional[Tuple[float, float]] = None,
  num_chains: int = 4,
  num_samples: int = 500,
  num_warmup: int = 500,
  dense_mass: bool = False,
  max_num_doublings: int = 10,
  map_steps: int = 0,
) -> NUTSResult:
  """NUTS over the weights of the network `forward` given the whole data set (x, y).

  Chains start near a fresh Haiku init (and log noise_std, with noise_prior), moved first by
  map_steps full-batch Adam steps up the log posterior (`find_map`; 0: none). Returns
  NUTSResult whose samples are Haiku params with leaves [num_chains, num_samples, ...]
  (with noise_prior: (params, log σ [num_chains, num_samples])); `stack_chains` makes them
  [S, ...] for `predictor`.
  """
  log_posterior = network_log_posterior(forward, info, x, y, prior_scale, noise_std, noise_prior)
  init_key, rng = jax.random.split(rng)
  init = hk.without_apply_rng(hk.transform(forward)).init(init_key, jnp.asarray(x[:1], jnp.float32))
  if noise_prior is not None:
    init = (init, jnp.log(jnp.float32(noise_std)))
  if map_steps:
    init = find_map(log_posterior, init, map_steps)
  return nuts_posterior(
    log_posterior,
    init,
    rng,
    num_chains,
    num_samples,
    num_warmup,
    dense_mass=dense_mass,
    max_num_doublings=max_num_doublings,
  )


def find_map(log_prob: Callable, init, num_steps: int, learning_rate: float = 1e-2):
  """init moved by num_steps Adam steps up log_prob (a pytree position -> scalar): a mode's
  neighbourhood, where chains start without a long warm-up through the prior's bulk."""
  optimizer = optax.adam(learning_rate)

  @jax.jit
  def climb(position):
    def step(carry, _):
      position, state = carry
      grads = jax.grad(lambda p: -log_prob(p))(position)
      updates, state = optimizer.update(grads, state)
      return (optax.apply_updates(position, updates), state), None

    (position, _), _ = jax.lax.scan(step, (position, optimizer.init(position)), None, length=num_steps)
    return position

  return climb(init)


def stack_chains(samples):
  """Leaves [num_chains, num_samples, ...] -> [num_chains * num_samples, ...]."""
  return jax.tree_util.tree_map(lambda a: a.reshape(-1, *a.shape[2:]), samples)


def predictor(forward: Callable, info: DataInfo, noise_std: float = 1.0) -> Predictor:
  """The predictive of posterior samples [S, ...] (see `stack_chains`): K = S draws.

  sample(samples, rng, x, num_samples) -> logits [S, B, C] or (means [S, B], stds [S, B]).
  """
  net = hk.without_apply_rng(hk.transform(forward))
  return ensemble.sample_predictor(net.apply, ensemble.check_outputs(info), noise_std)


def agreement(probs, reference_probs):
  """(top-1 agreement, mean total variation) of predictive probabilities [B, C] against a
  reference's [B, C] (e.g. NUTS): the fraction of inputs whose argmax agrees, and the mean
  over inputs of ½ Σ_c |p_c − q_c|."""
  probs, reference_probs = jnp.asarray(probs), jnp.asarray(reference_probs)
  if probs.shape != reference_probs.shape or probs.ndim != 2:
    raise ValueError(
      f"agreement needs two [B, C] arrays of one shape, got {probs.shape} and {reference_probs.shape}"
    )
  top1 = jnp.mean(jnp.argmax(probs, -1) == jnp.argmax(reference_probs, -1))
  return top1, 0.5 * jnp.mean(jnp.sum(jnp.abs(probs - reference_probs), -1))
