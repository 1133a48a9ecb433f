"""Mean-field Gaussian posteriors over any Haiku params pytree.

A posterior is a plain pytree, so optax, jit and orbax handle it like params:

    posterior = {"mean": params, "rho": bayesian_subset_of_params}      # scale="softplus"
    posterior = {"mean": params, "log_std": bayesian_subset_of_params}  # scale="log_std"

- "mean" is a complete Haiku params mapping (module -> name -> array): the
  posterior means of the Bayesian leaves and the point estimates of the rest.
  `mean_params(posterior)` is therefore directly usable by `apply`.
- the scale subtree ("rho" or "log_std", see `scale_params`) holds only the
  Bayesian leaves, same module/name keys and shapes. Its key names how the
  unconstrained parameter becomes a standard deviation:
  - "rho":     std = softplus(rho), Blundell et al.'s choice;
  - "log_std": std = exp(log_std) (log-variance / 2). Cheaper: one exp per weight
    gives std and variance, and log std, which the KL needs, is the parameter
    itself, where softplus costs an exp and a log1p forward, a sigmoid backward
    and a log in the KL. For small std softplus(rho) ~ exp(rho), so Adam moves
    both the same way; log std rather than log variance keeps that.

Every weight w of a Bayesian leaf is independent: q(w) = N(mean, std^2). Leaves
absent from the scale subtree are point estimates: no prior and no KL term.
"""

from typing import Callable, Optional, Union

import haiku as hk
import jax
import jax.numpy as jnp

from bnnjax import priors
from bnnjax.distributions import (
  gaussian_cross_entropy,
  gaussian_entropy,
  gaussian_kl,
  gaussian_log_prob,
  standard_normal,
)

Predicate = Callable[[str, str, jax.Array], bool]  # (module_name, name, value) -> Bayesian?


# scale parameterisation -> the posterior key that holds it
SCALE_KEYS = {"softplus": "rho", "log_std": "log_std"}


def inverse_softplus(std):
  """rho such that softplus(rho) = std; stable for small std (expm1)."""
  return jnp.log(jnp.expm1(std))


def _unconstrained(std, scale: str):
  """rho or log std of `std`, in float32 (callers round it once to each leaf's dtype: the nearest
  bfloat16 value, where computing in bfloat16 can land on another)."""
  std = jnp.asarray(std, jnp.float32)
  return inverse_softplus(std) if scale == "softplus" else jnp.log(std)


def init_posterior(
  params, init_std: float, bayesian: Optional[Union[str, Predicate]] = None, scale: str = "softplus"
):
  """A posterior whose means are `params` (fresh or trained) and whose stds are init_std.

  bayesian: None or "all" makes every leaf Bayesian; otherwise a Haiku-style
  predicate (module_name, name, value) -> bool choosing the Bayesian leaves.
  scale: "softplus" (std = softplus(rho)) or "log_std" (std = exp(log_std)).
  """
  if not init_std > 0:
    raise ValueError(f"init_std must be positive, got {init_std!r}")
  if scale not in SCALE_KEYS:
    raise ValueError(f"unknown posterior scale {scale!r}; choose one of {', '.join(SCALE_KEYS)}")
  if bayesian is None or bayesian == "all":
    bayesian = lambda module_name, name, value: True
  elif not callable(bayesian):
    raise ValueError(f"bayesian must be None, 'all' or a predicate, got {bayesian!r}")
  bayes_params, _ = hk.data_structures.partition(bayesian, params)
  if not jax.tree_util.tree_leaves(bayes_params):
    raise ValueError("bayesian predicate selected no parameters")
  start = _unconstrained(init_std, scale)
  unconstrained = jax.tree_util.tree_map(lambda w: jnp.full(w.shape, start, w.dtype), bayes_params)
  return {"mean": params, SCALE_KEYS[scale]: unconstrained}


def with_stds(posterior, new_stds):
  """The posterior with its Bayesian leaves' stds replaced by `new_stds` (structured like
  `scale_params(posterior)`), kept in the posterior's own parameterisation and dtypes (computed in
  float32, rounded once to each leaf's dtype)."""
  key = scale_key(posterior)
  scale = "softplus" if key == "rho" else "log_std"
  unconstrained = jax.tree_util.tree_map(
    lambda old, s: _unconstrained(s, scale).astype(old.dtype),
    posterior[key],
    new_stds,
  )
  return {**posterior, key: unconstrained}


def _scale_keys_in(tree):
  return [key for key in SCALE_KEYS.values() if key in tree]


def is_posterior(tree) -> bool:
  """Whether `tree` is a posterior pytree: {"mean": ..., "rho" or "log_std": ...}."""
  return isinstance(tree, dict) and "mean" in tree and len(_scale_keys_in(tree)) == 1


def scale_key(posterior) -> str:
  """ "rho" or "log_std": the key of the posterior's scale subtree."""
  keys = _scale_keys_in(posterior)
  if len(keys) != 1:
    raise ValueError(
      f"a posterior holds 'mean' and one of {list(SCALE_KEYS.values())}; got keys {sorted(posterior)}"
    )
  return keys[0]


def scale_params(posterior):
  """The unconstrained scale parameters of the Bayesian leaves (module -> name -> array)."""
  return posterior[scale_key(posterior)]


def mean_params(posterior):
  """The params pytree at the posterior mean (point estimates included)."""
  return posterior["mean"]


def bayesian_means(posterior):
  """The means of the Bayesian leaves only, structured like `scale_params(posterior)`."""
  return bayesian_leaves(posterior, posterior["mean"])


def bayesian_leaves(posterior, params):
  """The leaves of a full params pytree (e.g. a draw of `sample_params`) that the posterior
  makes Bayesian, structured like `scale_params(posterior)`."""
  scales = scale_params(posterior)
  return {m: {n: params[m][n] for n in scales[m]} for m in scales}


def stds(posterior):
  """The standard deviations of the Bayesian leaves: softplus(rho) or exp(log_std)."""
  if scale_key(posterior) == "rho":
    return jax.tree_util.tree_map(jax.nn.softplus, posterior["rho"])
  return jax.tree_util.tree_map(jnp.exp, posterior["log_std"])


def variances(posterior):
  """The variances of the Bayesian leaves: softplus(rho)^2 or exp(2 log_std).

  Under "log_std" this is one exp per weight whose derivative is the value itself (times 2),
  so the forward pass, the variance path's gradient and the KL share a single exp.
  """
  if scale_key(posterior) == "rho":
    return jax.tree_util.tree_map(lambda r: jnp.square(jax.nn.softplus(r)), posterior["rho"])
  return jax.tree_util.tree_map(lambda s: jnp.exp(2.0 * s), posterior["log_std"])


def log_stds(posterior):
  """log std of the Bayesian leaves; exactly the parameter under "log_std" (no log computed)."""
  if scale_key(posterior) == "rho":
    return jax.tree_util.tree_map(jnp.log, stds(posterior))
  return posterior["log_std"]


def _normal_like(rng, tree):
  """Independent standard normals, one array per leaf."""
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  keys = jax.random.split(rng, len(leaves))
  noise = [standard_normal(k, w.shape, w.dtype) for k, w in zip(keys, leaves)]
  return jax.tree_util.tree_unflatten(treedef, noise)


def sample_params(posterior, rng):
  """One draw w = mean + std * eps (reparameterisation), point estimates unchanged."""
  means = bayesian_means(posterior)
  eps = _normal_like(rng, means)
  sampled = jax.tree_util.tree_map(lambda m, s, e: m + s * e, means, stds(posterior), eps)
  return hk.data_structures.merge(posterior["mean"], sampled)


def log_prob(posterior, params):
  """log q(params) summed over the Bayesian leaves (point estimates are ignored)."""
  scales = scale_params(posterior)
  values = {m: {n: params[m][n] for n in scales[m]} for m in scales}
  terms = jax.tree_util.tree_map(
    lambda w, m, s: gaussian_log_prob(w, m, s).sum(), values, bayesian_means(posterior), stds(posterior)
  )
  return sum(jax.tree_util.tree_leaves(terms))


def entropy(posterior):
  """H[q] in closed form, summed over the Bayesian leaves."""
  log_sigmas = jax.tree_util.tree_leaves(log_stds(posterior))
  return sum(gaussian_entropy(log_std=log_s).sum() for log_s in log_sigmas)


def check_same_architecture(posterior, prior_posterior):
  """ValueError unless the two posteriors have the same Bayesian leaves and shapes."""
  shapes = lambda p: {
    m: {n: tuple(jnp.shape(w)) for n, w in leaves.items()} for m, leaves in scale_params(p).items()
  }
  ours, theirs = shapes(posterior), shapes(prior_posterior)
  if ours != theirs:
    raise ValueError(
      "prior posterior comes from another architecture: Bayesian leaves "
      f"{_describe(theirs)} differ from {_describe(ours)}"
    )


def _describe(shapes):
  return ", ".join(f"{m}/{n}{tuple(shapes[m][n])}" for m in sorted(shapes) for n in sorted(shapes[m]))


def kl(posterior, prior, rng: Optional[jax.Array] = None, weights=None):
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

  weights: draws of q already made, the Bayesian leaves (`bayesian_leaves`) with a leading
    axis K: the Monte Carlo cross term averages log p over them instead of drawing its own
    (Bayes by Backprop's estimator: the likelihood's weights also score the prior, so a
    reparameterised step draws each weight once). Unbiased either way; ignored by the
    closed forms.
  """
  if isinstance(prior, priors.LayerwisePrior):
    return _layerwise_kl(posterior, prior, rng, weights)
  means, sigmas, log_sigmas = bayesian_means(posterior), stds(posterior), log_stds(posterior)
  if isinstance(prior, priors.GaussianPrior):
    terms = jax.tree_util.tree_map(
      lambda m, v, log_s: gaussian_kl(m, None, 0.0, prior.scale, log_std_q=log_s, var_q=v).sum(),
      means,
      variances(posterior),
      log_sigmas,
    )
    return sum(jax.tree_util.tree_leaves(terms))
  if isinstance(prior, priors.PosteriorPrior):
    check_same_architecture(posterior, prior.posterior)
    terms = jax.tree_util.tree_map(
      lambda m, v, log_s, mp, sp: gaussian_kl(m, None, mp, sp, log_std_q=log_s, var_q=v).sum(),
      means,
      variances(posterior),
      log_sigmas,
      bayesian_means(prior.posterior),
      stds(prior.posterior),
    )
    return sum(jax.tree_util.tree_leaves(terms))
  if isinstance(prior, priors.ScaleMixturePrior) and prior.kl == "bound":
    terms = jax.tree_util.tree_map(
      lambda m, s, log_s: _mixture_kl_bound(m, s, log_s, prior).sum(), means, sigmas, log_sigmas
    )
    return sum(jax.tree_util.tree_leaves(terms))
  if isinstance(prior, priors.ScaleMixturePrior) and weights is not None:
    cross = jnp.mean(jax.vmap(lambda w: priors.log_prob(w, prior))(weights))
    return -entropy(posterior) - cross
  if isinstance(prior, priors.ScaleMixturePrior):
    if rng is None:
      raise ValueError("kl to a scale-mixture prior is a Monte Carlo estimate: pass rng or weights")
    eps = _normal_like(rng, means)
    w = jax.tree_util.tree_map(lambda m, s, e: m + s * e, means, sigmas, eps)
    return -entropy(posterior) - priors.log_prob(w, prior)
  raise ValueError(f"kl: unknown prior {type(prior).__name__}")


def _layerwise_kl(posterior, prior, rng, weights):
  modules = [module for module, _ in prior.by_module]
  bayesian_modules = sorted(scale_params(posterior))
  if sorted(modules) != bayesian_modules:
    raise ValueError(
      f"layerwise prior covers modules {sorted(modules)} but the Bayesian modules are {bayesian_modules}"
    )
  only = lambda q, module: {
    "mean": {module: q["mean"][module]},
    scale_key(q): {module: scale_params(q)[module]},
  }
  total = 0.0
  for i, (module, module_prior) in enumerate(prior.by_module):
    if isinstance(module_prior, priors.PosteriorPrior):
      module_prior = priors.PosteriorPrior(only(module_prior.posterior, module))
    module_rng = None if rng is None else jax.random.fold_in(rng, i)
    module_weights = None if weights is None else {module: weights[module]}
    total = total + kl(only(posterior, module), module_prior, module_rng, module_weights)
  return total


def _mixture_kl_bound(mean, std, log_std, prior):
  """Elementwise upper bound on KL(N(mean, std^2) || scale mixture), see `kl`."""
  cross_1 = jnp.log(prior.pi) - gaussian_cross_entropy(mean, std, 0.0, prior.scale1)
  cross_2 = jnp.log1p(-prior.pi) - gaussian_cross_entropy(mean, std, 0.0, prior.scale2)
  return -gaussian_entropy(log_std=log_std) - jnp.logaddexp(cross_1, cross_2)
