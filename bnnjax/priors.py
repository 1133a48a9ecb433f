"""Priors over network weights, and their log-densities.

Four priors, each a small immutable record (a pytree-free NamedTuple, so that it
can be closed over by jitted functions):

- `GaussianPrior(scale)`: every weight ~ N(0, scale^2).
- `ScaleMixturePrior(pi, scale1, scale2, kl)`: every weight ~ pi N(0, scale1^2) +
  (1 - pi) N(0, scale2^2), as in Bayes by Backprop (Blundell et al. 2015). Its KL
  to a Gaussian posterior has no closed form; `bnnjax.posterior.kl` either
  estimates it by Monte Carlo (kl="mc", unbiased, one weight draw per step) or
  replaces it by a closed-form upper bound (kl="bound", no draw; the ELBO it
  gives is still a lower bound on log p(D)).
- `PosteriorPrior(posterior)`: a previously trained mean-field posterior used as
  the prior of a new task (continual learning); KL in closed form.
- `LayerwisePrior(by_module)`: one of the priors above per Haiku module, e.g. a
  wide Gaussian on the input layer and a scale mixture elsewhere.

The KL divergences themselves live in `bnnjax.posterior.kl`, beside the posterior.
"""

from typing import Any, Mapping, NamedTuple, Tuple

import jax
import jax.numpy as jnp

from bnnjax.distributions import gaussian_log_prob

PRIORS = ("gaussian", "mixture", "posterior")
MIXTURE_KL = ("mc", "bound")


class GaussianPrior(NamedTuple):
  """p(w) = N(0, scale^2) for every weight."""

  scale: float


class ScaleMixturePrior(NamedTuple):
  """p(w) = pi N(0, scale1^2) + (1 - pi) N(0, scale2^2) (Blundell et al., 2015)."""

  pi: float  # weight of the first component
  scale1: float
  scale2: float
  kl: str = "mc"  # how KL(q || p) is computed: "mc" or "bound", see bnnjax.posterior.kl


class PosteriorPrior(NamedTuple):
  """A previous posterior as the prior (continual learning): KL between two mean-field Gaussians."""

  posterior: Any  # {"mean": params, "rho" or "log_std": params}, see bnnjax.posterior


class LayerwisePrior(NamedTuple):
  """One prior per Haiku module (layer)."""

  by_module: Tuple[Tuple[str, Any], ...]  # ((module_name, prior), ...), each module once


def layerwise_prior(by_module: Mapping[str, Any]) -> LayerwisePrior:
  """A LayerwisePrior from {module name: GaussianPrior or ScaleMixturePrior}, checked."""
  for module, prior in by_module.items():
    if not isinstance(prior, (GaussianPrior, ScaleMixturePrior, PosteriorPrior)):
      raise ValueError(
        f"layerwise prior for {module!r} must be a Gaussian, scale-mixture or "
        f"posterior prior, got {type(prior).__name__}"
      )
  return LayerwisePrior(tuple(sorted(by_module.items())))


def gaussian_prior(scale: float) -> GaussianPrior:
  """N(0, scale^2); a one-line ValueError unless scale > 0."""
  if not scale > 0:
    raise ValueError(f"prior scale must be positive, got {scale!r}")
  return GaussianPrior(float(scale))


def scale_mixture_prior(pi: float, scale1: float, scale2: float, kl: str = "mc") -> ScaleMixturePrior:
  """The scale mixture, its fields checked; `kl` is "mc" (unbiased) or "bound" (closed form)."""
  if not 0 < pi < 1:
    raise ValueError(f"mixture weight pi must lie in (0, 1), got {pi!r}")
  for name, scale in (("scale1", scale1), ("scale2", scale2)):
    if not scale > 0:
      raise ValueError(f"mixture {name} must be positive, got {scale!r}")
  if kl not in MIXTURE_KL:
    raise ValueError(f"mixture kl must be one of {', '.join(MIXTURE_KL)}, got {kl!r}")
  return ScaleMixturePrior(float(pi), float(scale1), float(scale2), kl)


def scale_mixture_log_prob(w, prior: ScaleMixturePrior):
  """log(pi N(w; 0, s1^2) + (1 - pi) N(w; 0, s2^2)), elementwise, stable for any w."""
  log_1 = jnp.log(prior.pi) + gaussian_log_prob(w, 0.0, prior.scale1)
  log_2 = jnp.log1p(-prior.pi) + gaussian_log_prob(w, 0.0, prior.scale2)
  return jnp.logaddexp(log_1, log_2)


def log_prob(params, prior) -> jax.Array:
  """log p(params) summed over every leaf, for a Gaussian or scale-mixture prior."""
  if isinstance(prior, GaussianPrior):
    leaf_log_prob = lambda w: gaussian_log_prob(w, 0.0, prior.scale).sum()
  elif isinstance(prior, ScaleMixturePrior):
    leaf_log_prob = lambda w: scale_mixture_log_prob(w, prior).sum()
  else:
    raise ValueError(f"log_prob: unsupported prior {type(prior).__name__}")
  return sum(leaf_log_prob(w) for w in jax.tree_util.tree_leaves(params))
