"""Mean-field Gaussian posteriors over any Haiku params pytree.

A posterior is a plain pytree, so optax, jit and orbax handle it like params:

    posterior = {"mean": params, "rho": bayesian_subset_of_params}

- "mean" is a complete Haiku params mapping (module -> name -> array): the
  posterior means of the Bayesian leaves and the point estimates of the rest.
  `mean_params(posterior)` is therefore directly usable by `apply`.
- "rho" holds only the Bayesian leaves, same module/name keys and shapes; their
  standard deviation is std = softplus(rho) (unconstrained, positive, and for
  small std almost linear in exp(rho)).

Every weight w of a Bayesian leaf is independent: q(w) = N(mean, softplus(rho)^2).
Leaves absent from "rho" are point estimates: they have no prior and no KL term.
"""
from typing import Callable, Optional, Union

import haiku as hk
import jax
import jax.numpy as jnp

from bnnjax import priors
from bnnjax.distributions import (gaussian_cross_entropy, gaussian_entropy, gaussian_kl,
                                  gaussian_log_prob)

Predicate = Callable[[str, str, jax.Array], bool]  # (module_name, name, value) -> Bayesian?


def inverse_softplus(std):
  """rho such that softplus(rho) = std; stable for small std (expm1)."""
  return jnp.log(jnp.expm1(std))


def init_posterior(params, init_std: float, bayesian: Optional[Union[str, Predicate]] = None):
  """A posterior whose means are `params` (fresh or trained) and whose stds are init_std.

  bayesian: None or "all" makes every leaf Bayesian; otherwise a Haiku-style
  predicate (module_name, name, value) -> bool choosing the Bayesian leaves.
  """
  if not init_std > 0:
    raise ValueError(f"init_std must be positive, got {init_std!r}")
  if bayesian is None or bayesian == "all":
    bayesian = lambda module_name, name, value: True
  elif not callable(bayesian):
    raise ValueError(f"bayesian must be None, 'all' or a predicate, got {bayesian!r}")
  bayes_params, _ = hk.data_structures.partition(bayesian, params)
  if not jax.tree_util.tree_leaves(bayes_params):
    raise ValueError("bayesian predicate selected no parameters")
  rho = jax.tree_util.tree_map(
      lambda w: jnp.full(w.shape, inverse_softplus(jnp.asarray(init_std, w.dtype)), w.dtype),
      bayes_params)
  return {"mean": params, "rho": rho}


def mean_params(posterior):
  """The params pytree at the posterior mean (point estimates included)."""
  return posterior["mean"]


def bayesian_means(posterior):
  """The means of the Bayesian leaves only, structured like posterior["rho"]."""
  mean, rho = posterior["mean"], posterior["rho"]
  return {m: {n: mean[m][n] for n in rho[m]} for m in rho}


def stds(posterior):
  """softplus(rho): the standard deviations of the Bayesian leaves."""
  return jax.tree_util.tree_map(jax.nn.softplus, posterior["rho"])


def _normal_like(rng, tree):
  """Independent standard normals, one array per leaf."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(rng, len(leaves))
  noise = [jax.random.normal(k, w.shape, w.dtype) for k, w in zip(keys, leaves)]
  return jax.tree_util.tree_unflatten(treedef, noise)


def sample_params(posterior, rng):
  """One draw w = mean + std * eps (reparameterisation), point estimates unchanged."""
  means = bayesian_means(posterior)
  eps = _normal_like(rng, means)
  sampled = jax.tree_util.tree_map(lambda m, s, e: m + s * e, means, stds(posterior), eps)
  return hk.data_structures.merge(posterior["mean"], sampled)


def log_prob(posterior, params):
  """log q(params) summed over the Bayesian leaves (point estimates are ignored)."""
  values = {m: {n: params[m][n] for n in posterior["rho"][m]} for m in posterior["rho"]}
  terms = jax.tree_util.tree_map(lambda w, m, s: gaussian_log_prob(w, m, s).sum(), values,
                                 bayesian_means(posterior), stds(posterior))
  return sum(jax.tree_util.tree_leaves(terms))


def entropy(posterior):
  """H[q] in closed form, summed over the Bayesian leaves."""
  return sum(gaussian_entropy(s).sum() for s in jax.tree_util.tree_leaves(stds(posterior)))


def check_same_architecture(posterior, prior_posterior):
  """ValueError unless the two posteriors have the same Bayesian leaves and shapes."""
  shapes = lambda p: {m: {n: tuple(jnp.shape(w)) for n, w in p["rho"][m].items()} for m in p["rho"]}
  ours, theirs = shapes(posterior), shapes(prior_posterior)
  if ours != theirs:
    raise ValueError("prior posterior comes from another architecture: Bayesian leaves "
                     f"{_describe(theirs)} differ from {_describe(ours)}")


def _describe(shapes):
  return ", ".join(f"{m}/{n}{tuple(shapes[m][n])}" for m in sorted(shapes) for n in sorted(shapes[m]))


def kl(posterior, prior, rng: Optional[jax.Array] = None):
  """KL(q || p) summed over the Bayesian leaves.

  Closed form for a Gaussian prior and for a previous posterior used as prior.
  A layerwise prior sums the KL of each module under its own prior.
  For the scale-mixture prior p = pi N(0, s1^2) + (1 - pi) N(0, s2^2):
  - prior.kl == "mc": the unbiased one-sample Monte Carlo estimate
    KL = -H[q] - E_q[log p(w)] ~= -H[q] - log p(w), w ~ q: the entropy is exact,
    only the cross term is sampled, which keeps the variance low. Needs `rng`.
  - prior.kl == "bound": Jensen's inequality with the best per-weight component
    responsibilities, E_q[log p(w)] >= logsumexp_k(log pi_k + E_q[log N(w; 0, s_k^2)]),
    gives a closed-form upper bound on the KL (exact when one component carries
    the weight). No weight draw, no variance; the ELBO stays a lower bound.
  """
  if isinstance(prior, priors.LayerwisePrior):
    return _layerwise_kl(posterior, prior, rng)
  means, sigmas = bayesian_means(posterior), stds(posterior)
  if isinstance(prior, priors.GaussianPrior):
    terms = jax.tree_util.tree_map(lambda m, s: gaussian_kl(m, s, 0.0, prior.scale).sum(),
                                   means, sigmas)
    return sum(jax.tree_util.tree_leaves(terms))
  if isinstance(prior, priors.PosteriorPrior):
    check_same_architecture(posterior, prior.posterior)
    terms = jax.tree_util.tree_map(lambda m, s, mp, sp: gaussian_kl(m, s, mp, sp).sum(), means,
                                   sigmas, bayesian_means(prior.posterior), stds(prior.posterior))
    return sum(jax.tree_util.tree_leaves(terms))
  if isinstance(prior, priors.ScaleMixturePrior) and prior.kl == "bound":
    terms = jax.tree_util.tree_map(lambda m, s: _mixture_kl_bound(m, s, prior).sum(), means, sigmas)
    return sum(jax.tree_util.tree_leaves(terms))
  if isinstance(prior, priors.ScaleMixturePrior):
    if rng is None:
      raise ValueError("kl to a scale-mixture prior is a Monte Carlo estimate: pass rng")
    eps = _normal_like(rng, means)
    w = jax.tree_util.tree_map(lambda m, s, e: m + s * e, means, sigmas, eps)
    return -entropy(posterior) - priors.log_prob(w, prior)
  raise ValueError(f"kl: unknown prior {type(prior).__name__}")


def _layerwise_kl(posterior, prior, rng):
  modules = [module for module, _ in prior.by_module]
  if sorted(modules) != sorted(posterior["rho"]):
    raise ValueError(f"layerwise prior covers modules {sorted(modules)} but the Bayesian "
                     f"modules are {sorted(posterior['rho'])}")
  only = lambda q, module: {"mean": {module: q["mean"][module]}, "rho": {module: q["rho"][module]}}
  total = 0.0
  for i, (module, module_prior) in enumerate(prior.by_module):
    if isinstance(module_prior, priors.PosteriorPrior):
      module_prior = priors.PosteriorPrior(only(module_prior.posterior, module))
    module_rng = None if rng is None else jax.random.fold_in(rng, i)
    total = total + kl(only(posterior, module), module_prior, module_rng)
  return total


def _mixture_kl_bound(mean, std, prior):
  """Elementwise upper bound on KL(N(mean, std^2) || scale mixture), see `kl`."""
  cross_1 = jnp.log(prior.pi) - gaussian_cross_entropy(mean, std, 0.0, prior.scale1)
  cross_2 = jnp.log1p(-prior.pi) - gaussian_cross_entropy(mean, std, 0.0, prior.scale2)
  return -gaussian_entropy(std) - jnp.logaddexp(cross_1, cross_2)
