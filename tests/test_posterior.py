"""Mean-field posterior pytrees: construction, sampling, densities and KL, with known answers."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnjax import posterior as post
from bnnjax import priors
from bnnjax.distributions import gaussian_entropy


def _params():
  net = hk.transform(lambda x: hk.nets.MLP([4, 3])(x))
  return net.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))


def test_init_posterior_keeps_means_and_sets_std():
  params = _params()
  q = post.init_posterior(params, 0.05)
  for m in params:
    for n in params[m]:
      np.testing.assert_array_equal(q["mean"][m][n], params[m][n])
      np.testing.assert_allclose(jax.nn.softplus(q["rho"][m][n]), 0.05, rtol=1e-5)


def test_predicate_keeps_other_leaves_as_point_estimates():
  params = _params()
  last = lambda module_name, name, value: module_name == "mlp/~/linear_1"
  q = post.init_posterior(params, 0.1, bayesian=last)
  assert set(q["rho"]) == {"mlp/~/linear_1"}
  sample = post.sample_params(q, jax.random.PRNGKey(1))
  np.testing.assert_array_equal(sample["mlp/~/linear_0"]["w"], params["mlp/~/linear_0"]["w"])
  assert not np.allclose(sample["mlp/~/linear_1"]["w"], params["mlp/~/linear_1"]["w"])


@pytest.mark.parametrize("init_std", [0.0, -0.1])
def test_non_positive_init_std_is_an_error(init_std):
  with pytest.raises(ValueError, match="init_std must be positive"):
    post.init_posterior(_params(), init_std)


@pytest.mark.parametrize("scale", ["softplus", "log_std"])
def test_samples_have_the_posterior_mean_and_std(scale):
  q = post.init_posterior(_params(), 0.3, scale=scale)
  samples = jax.vmap(lambda k: post.sample_params(q, k))(jax.random.split(jax.random.PRNGKey(2), 4000))
  w = samples["mlp/~/linear_0"]["w"]  # [4000, 2, 4]
  # 4000 draws: standard error of the mean 0.3 / 63 = 0.005, of the std 0.3 / 89 = 0.0034.
  np.testing.assert_allclose(w.mean(0), q["mean"]["mlp/~/linear_0"]["w"], atol=0.025)
  np.testing.assert_allclose(w.std(0), 0.3, atol=0.02)


def test_log_prob_and_entropy_match_hand_formulas():
  params = {"lin": {"w": jnp.array([0.5, -1.0])}}
  q = post.init_posterior(params, 2.0)
  x = {"lin": {"w": jnp.array([1.5, 1.0])}}
  # log N(1.5; 0.5, 4) + log N(1.0; -1, 4) = -log(2 pi 4) - (1 + 4) / 8
  expected = -np.log(2 * np.pi * 4.0) - 5.0 / 8.0
  np.testing.assert_allclose(post.log_prob(q, x), expected, rtol=1e-5)
  np.testing.assert_allclose(post.entropy(q), 2 * 0.5 * np.log(2 * np.pi * np.e * 4.0), rtol=1e-5)


def _random_posterior(key, shapes, spread=0.5, scale="softplus"):
  """Random means and stds; the same key gives the same distribution under either scale."""
  k1, k2 = jax.random.split(key)
  params = {
    "layer": {n: jax.random.normal(jax.random.fold_in(k1, i), s) for i, (n, s) in enumerate(shapes.items())}
  }
  q = post.init_posterior(params, 0.1)
  rho = jax.tree_util.tree_map(lambda r: r + spread * jax.random.normal(k2, r.shape) + 1.5, q["rho"])
  if scale == "softplus":
    return {"mean": q["mean"], "rho": rho}
  return {"mean": q["mean"], "log_std": jax.tree_util.tree_map(lambda r: jnp.log(jax.nn.softplus(r)), rho)}


def _monte_carlo_kl(q, log_prior, key, n):
  """mean over n draws of log q(w) - log p(w)."""

  def one(k):
    w = post.sample_params(q, k)
    return post.log_prob(q, w) - log_prior(w)

  return jnp.mean(jax.vmap(one)(jax.random.split(key, n)))


@pytest.mark.parametrize("scale", ["softplus", "log_std"])
def test_closed_form_gaussian_kl_matches_monte_carlo(scale):
  q = _random_posterior(jax.random.PRNGKey(3), {"w": (3, 2), "b": (2,)}, scale=scale)
  prior = priors.gaussian_prior(0.7)
  exact = post.kl(q, prior)
  mc = _monte_carlo_kl(q, lambda w: priors.log_prob(w, prior), jax.random.PRNGKey(4), 100_000)
  assert exact > 1.0
  np.testing.assert_allclose(mc, exact, rtol=0.01)


def test_posterior_prior_kl_is_closed_form_and_zero_to_itself():
  q = _random_posterior(jax.random.PRNGKey(5), {"w": (3, 2)})
  p = _random_posterior(jax.random.PRNGKey(6), {"w": (3, 2)})
  np.testing.assert_allclose(post.kl(q, priors.PosteriorPrior(q)), 0.0, atol=1e-5)
  mc = _monte_carlo_kl(q, lambda w: post.log_prob(p, w), jax.random.PRNGKey(7), 100_000)
  np.testing.assert_allclose(mc, post.kl(q, priors.PosteriorPrior(p)), rtol=0.01)


def test_prior_posterior_from_another_architecture_is_an_error():
  q = _random_posterior(jax.random.PRNGKey(5), {"w": (3, 2)})
  other = _random_posterior(jax.random.PRNGKey(6), {"w": (3, 4)})
  with pytest.raises(ValueError, match="another architecture"):
    post.kl(q, priors.PosteriorPrior(other))


def test_mean_params_is_usable_by_apply():
  net = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP([4, 3])(x)))
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))
  q = post.init_posterior(params, 0.1)
  x = jnp.ones((2, 2))
  np.testing.assert_array_equal(net.apply(post.mean_params(q), x), net.apply(params, x))


def test_log_std_scale_is_the_same_distribution_as_softplus():
  shapes = {"w": (3, 2), "b": (2,)}
  q_soft = _random_posterior(jax.random.PRNGKey(8), shapes, scale="softplus")
  q_log = _random_posterior(jax.random.PRNGKey(8), shapes, scale="log_std")
  assert post.scale_key(q_soft) == "rho" and post.scale_key(q_log) == "log_std"
  # log_stds hands back the parameter itself: that is what saves the KL its log.
  assert post.log_stds(q_log) is q_log["log_std"]
  for a, b in zip(jax.tree_util.tree_leaves(post.stds(q_soft)), jax.tree_util.tree_leaves(post.stds(q_log))):
    np.testing.assert_allclose(a, b, rtol=1e-5)
  # variances (what local reparameterisation and the KL use) are the squared stds in both.
  for q in (q_soft, q_log):
    for v, s in zip(jax.tree_util.tree_leaves(post.variances(q)), jax.tree_util.tree_leaves(post.stds(q))):
      np.testing.assert_allclose(v, s**2, rtol=1e-5)
  p = _random_posterior(jax.random.PRNGKey(9), shapes, scale="softplus")
  w = post.sample_params(p, jax.random.PRNGKey(10))
  for value in (
    lambda q: post.kl(q, priors.gaussian_prior(0.7)),
    lambda q: post.kl(q, priors.PosteriorPrior(p)),
    lambda q: post.kl(q, priors.scale_mixture_prior(0.5, 1.0, 0.05, kl="bound")),
    lambda q: post.kl(q, priors.scale_mixture_prior(0.5, 1.0, 0.05), jax.random.PRNGKey(11)),
    post.entropy,
    lambda q: post.log_prob(q, w),
  ):
    np.testing.assert_allclose(value(q_log), value(q_soft), rtol=1e-5)
  # A log-std posterior is a valid prior for a softplus one and the other way round.
  np.testing.assert_allclose(post.kl(q_soft, priors.PosteriorPrior(q_log)), 0.0, atol=1e-5)


def test_init_posterior_log_std_sets_std_and_unknown_scale_is_an_error():
  q = post.init_posterior(_params(), 0.05, scale="log_std")
  assert set(q) == {"mean", "log_std"}
  for leaf in jax.tree_util.tree_leaves(post.stds(q)):
    np.testing.assert_allclose(leaf, 0.05, rtol=1e-6)
  with pytest.raises(ValueError, match="unknown posterior scale 'log_var'"):
    post.init_posterior(_params(), 0.05, scale="log_var")
  with pytest.raises(ValueError, match="a posterior holds 'mean' and one of"):
    post.stds({**q, "rho": q["log_std"]})


def test_gaussian_entropy_takes_exactly_one_of_std_and_log_std():
  np.testing.assert_allclose(
    gaussian_entropy(std=jnp.float32(2.0)), gaussian_entropy(log_std=jnp.log(jnp.float32(2.0))), rtol=1e-6
  )
  with pytest.raises(ValueError, match="exactly one of std and log_std"):
    gaussian_entropy(std=1.0, log_std=0.0)
  with pytest.raises(ValueError, match="exactly one of std and log_std"):
    gaussian_entropy()
