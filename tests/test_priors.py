"""Priors: the scale-mixture density, its unbiased KL estimator, and bad parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnjax import posterior as post
from bnnjax import priors


def _normal_pdf(x, std):
  return np.exp(-0.5 * (x / std) ** 2) / (np.sqrt(2 * np.pi) * std)


def test_scale_mixture_density_matches_hand_formula_and_normalises():
  prior = priors.scale_mixture_prior(0.25, 1.0, 0.01)
  w = np.array([0.0, 0.005, 0.3, 3.0, 40.0])
  log_normal = lambda x, std: -0.5 * (x / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
  # In log space: at w = 40 the narrow component underflows but the sum must not.
  expected = np.logaddexp(np.log(0.25) + log_normal(w, 1.0), np.log(0.75) + log_normal(w, 0.01))
  np.testing.assert_allclose(priors.scale_mixture_log_prob(jnp.asarray(w), prior), expected, rtol=1e-5)
  grid = np.linspace(-12, 12, 2_000_001)
  density = np.exp(np.asarray(priors.scale_mixture_log_prob(jnp.asarray(grid), prior), np.float64))
  np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, rtol=1e-4)


def _kl_by_quadrature(mean, std, prior):
  """KL(N(mean, std^2) || mixture) per weight, by a fine trapezoid rule in float64."""
  total = 0.0
  for m, s in zip(mean.ravel(), std.ravel()):
    w = np.linspace(m - 10 * s, m + 10 * s, 20001)
    q = _normal_pdf(w - m, s)
    log_p = np.log(prior.pi * _normal_pdf(w, prior.scale1) + (1 - prior.pi) * _normal_pdf(w, prior.scale2))
    total += np.trapezoid(q * (np.log(q) - log_p), w)
  return total


def _posterior_with_stds(mean, std):
  q = post.init_posterior({"layer": {"w": jnp.asarray(mean, jnp.float32)}}, 0.1)
  q["rho"]["layer"]["w"] = post.inverse_softplus(jnp.asarray(std, jnp.float32))
  return q


def test_scale_mixture_kl_estimator_is_unbiased():
  prior = priors.scale_mixture_prior(0.5, 1.0, np.exp(-3))
  mean = jnp.array([[0.0, 0.02, -0.3], [1.2, -0.05, 0.6]])
  q = _posterior_with_stds(mean, [[0.03, 0.2, 0.1], [0.5, 0.01, 0.3]])
  exact = _kl_by_quadrature(
    np.asarray(mean, np.float64), np.asarray(post.stds(q)["layer"]["w"], np.float64), prior
  )
  estimates = jax.vmap(lambda k: post.kl(q, prior, k))(jax.random.split(jax.random.PRNGKey(0), 100_000))
  standard_error = float(estimates.std()) / np.sqrt(estimates.size)
  assert abs(float(estimates.mean()) - exact) < 4 * standard_error + 1e-4
  # The estimator is not a constant: a wrong sign or missing term would not hide in noise.
  assert standard_error < 0.01 * abs(exact)


def test_scale_mixture_kl_needs_an_rng():
  q = post.init_posterior({"layer": {"w": jnp.zeros(3)}}, 0.1)
  with pytest.raises(ValueError, match="pass rng"):
    post.kl(q, priors.scale_mixture_prior(0.5, 1.0, 0.1))


@pytest.mark.parametrize("pi", [0.0, 1.0, -0.2, 1.5])
def test_mixture_weight_outside_unit_interval_is_an_error(pi):
  with pytest.raises(ValueError, match=r"pi must lie in \(0, 1\)"):
    priors.scale_mixture_prior(pi, 1.0, 0.1)


@pytest.mark.parametrize("scales", [(0.0, 0.1), (1.0, -1.0)])
def test_non_positive_mixture_scale_is_an_error(scales):
  with pytest.raises(ValueError, match="must be positive"):
    priors.scale_mixture_prior(0.5, *scales)


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_non_positive_gaussian_scale_is_an_error(scale):
  with pytest.raises(ValueError, match="prior scale must be positive"):
    priors.gaussian_prior(scale)


def test_scale_mixture_kl_bound_is_an_upper_bound_and_tight_where_one_component_rules():
  prior = priors.scale_mixture_prior(0.5, 1.0, np.exp(-3), kl="bound")
  # Each weight alone: the bound must hold per weight, not only in the sum.
  for m, s in [(0.0, 0.01), (0.02, 0.2), (-0.3, 0.1), (1.2, 0.5), (-0.05, 0.03), (0.6, 0.3)]:
    exact = _kl_by_quadrature(np.array([m]), np.array([s]), prior)
    bound = float(post.kl(_posterior_with_stds([m], [s]), prior))
    assert bound >= exact - 1e-4, (m, s, bound, exact)
  # q far in the wide component's territory (|m| >> s2, m / s >= 8): the narrow one has no say.
  for m, s in [(1.2, 0.1), (0.8, 0.05), (-1.0, 0.1)]:
    exact = _kl_by_quadrature(np.array([m]), np.array([s]), prior)
    bound = float(post.kl(_posterior_with_stds([m], [s]), prior))
    assert -1e-4 <= bound - exact < 1e-3, (m, s, bound, exact)
  # A weight straddling both components shows a real gap: the bound is not the exact KL.
  exact = _kl_by_quadrature(np.array([0.0]), np.array([0.1]), prior)
  bound = float(post.kl(_posterior_with_stds([0.0], [0.1]), prior))
  assert bound - exact > 1e-3


def test_scale_mixture_kl_bound_is_exact_when_the_components_coincide():
  # pi N(0, s^2) + (1 - pi) N(0, s^2) = N(0, s^2): the bound must equal the closed form.
  mean, std = jnp.array([0.3, -1.0, 0.0]), jnp.array([0.2, 0.05, 0.7])
  q = _posterior_with_stds(mean, std)
  bound = post.kl(q, priors.scale_mixture_prior(0.3, 0.5, 0.5, kl="bound"))
  closed = post.kl(q, priors.gaussian_prior(0.5))
  np.testing.assert_allclose(float(bound), float(closed), rtol=1e-5)


def test_unknown_mixture_kl_method_is_an_error():
  with pytest.raises(ValueError, match="mixture kl must be one of mc, bound"):
    priors.scale_mixture_prior(0.5, 1.0, 0.1, kl="exact")


def _two_layer_posterior():
  params = {"a": {"w": jnp.array([[0.3, -0.2], [1.0, 0.0]])}, "b": {"w": jnp.array([0.5, -0.7])}}
  q = post.init_posterior(params, 0.1)
  q["rho"]["b"]["w"] = post.inverse_softplus(jnp.array([0.05, 0.4]))
  return q


def test_layerwise_prior_is_the_sum_of_each_module_under_its_own_prior():
  q = _two_layer_posterior()
  wide, mixture = priors.gaussian_prior(1.0), priors.scale_mixture_prior(0.5, 1.0, 0.05, kl="bound")
  layerwise = priors.layerwise_prior({"a": wide, "b": mixture})
  only = lambda module: {"mean": {module: q["mean"][module]}, "rho": {module: q["rho"][module]}}
  expected = float(post.kl(only("a"), wide)) + float(post.kl(only("b"), mixture))
  np.testing.assert_allclose(float(post.kl(q, layerwise)), expected, rtol=1e-6)
  # Swapping the priors changes the answer: the modules are matched by name, not by order.
  swapped = priors.layerwise_prior({"a": mixture, "b": wide})
  assert abs(float(post.kl(q, swapped)) - expected) > 0.05
  # One prior everywhere is the plain prior.
  np.testing.assert_allclose(
    float(post.kl(q, priors.layerwise_prior({"a": wide, "b": wide}))), float(post.kl(q, wide)), rtol=1e-6
  )


def test_layerwise_prior_must_cover_exactly_the_bayesian_modules():
  with pytest.raises(ValueError, match=r"covers modules \['a'\] but the Bayesian modules are"):
    post.kl(_two_layer_posterior(), priors.layerwise_prior({"a": priors.gaussian_prior(1.0)}))
