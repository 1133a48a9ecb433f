"""Known answers for bnnjax.predictive: entropy decomposition, mixture moments, interval coverage."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from bnnjax import distributions, estimators, metrics, posterior, predictive
from bnnjax.models import mlp


def _logits_from_probs(*probs):
  """[K, 1, C] logits whose softmax is each given distribution."""
  return jnp.log(jnp.asarray(probs, jnp.float32))[:, None, :]


def _entropy(p):
  p = np.asarray(p, np.float64)
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


# ---------------------------------------------------------------- sampling


def test_sample_predictions_vmaps_over_independent_keys():
  x = jnp.arange(3.0)
  out = predictive.sample_predictions(
    lambda key, x: x + jax.random.normal(key, x.shape), jax.random.PRNGKey(0), x, 4000
  )
  assert out.shape == (4000, 3)
  # Independent N(x, 1) draws: mean x and unit std, to Monte Carlo precision (sd 1/sqrt(4000)).
  np.testing.assert_allclose(out.mean(0), x, atol=0.08)
  np.testing.assert_allclose(out.std(0), 1.0, atol=0.05)
  assert abs(np.corrcoef(out[:, 0], out[:, 1])[0, 1]) < 0.08


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_sample_predictions_rejects_bad_num_samples(bad):
  with pytest.raises(ValueError, match="num_samples"):
    predictive.sample_predictions(lambda key, x: x, jax.random.PRNGKey(0), jnp.zeros(2), bad)


# ---------------------------------------------------------------- classification


def test_mutual_information_is_zero_when_all_samples_agree():
  logits = jax.random.normal(jax.random.PRNGKey(1), (1, 16, 5)) * 3.0
  pred = predictive.classification_predictive(jnp.tile(logits, (6, 1, 1)))
  p = jax.nn.softmax(logits[0])
  np.testing.assert_allclose(pred.probs, p, atol=1e-6)
  np.testing.assert_allclose(pred.std, 0.0, atol=1e-6)
  np.testing.assert_allclose(pred.mutual_information, 0.0, atol=1e-5)
  np.testing.assert_allclose(pred.predictive_entropy, _entropy(p), atol=1e-5)
  np.testing.assert_allclose(pred.expected_entropy, _entropy(p), atol=1e-5)


def test_two_confident_samples_that_disagree_give_log2_bits_of_epistemic_uncertainty():
  pred = predictive.classification_predictive(jnp.array([[[30.0, -30.0]], [[-30.0, 30.0]]]))
  np.testing.assert_allclose(pred.probs, [[0.5, 0.5]], atol=1e-6)
  np.testing.assert_allclose(pred.predictive_entropy, [np.log(2)], atol=1e-6)
  np.testing.assert_allclose(pred.expected_entropy, [0.0], atol=1e-6)
  np.testing.assert_allclose(pred.mutual_information, [np.log(2)], atol=1e-6)
  np.testing.assert_allclose(pred.std, [[0.5, 0.5]], atol=1e-6)


def test_hand_case_of_the_decomposition():
  # p1 = (0.5, 0.5), p2 = (0.9, 0.1): p̄ = (0.7, 0.3).
  pred = predictive.classification_predictive(_logits_from_probs([0.5, 0.5], [0.9, 0.1]))
  h_mean = -(0.7 * np.log(0.7) + 0.3 * np.log(0.3))
  e_h = (np.log(2) - (0.9 * np.log(0.9) + 0.1 * np.log(0.1))) / 2
  np.testing.assert_allclose(pred.probs, [[0.7, 0.3]], atol=1e-6)
  np.testing.assert_allclose(pred.std, [[0.2, 0.2]], atol=1e-6)
  np.testing.assert_allclose(pred.predictive_entropy, [h_mean], atol=1e-6)
  np.testing.assert_allclose(pred.expected_entropy, [e_h], atol=1e-6)
  np.testing.assert_allclose(pred.mutual_information, [h_mean - e_h], atol=1e-6)


def test_decomposition_identity_and_mutual_information_as_mean_kl_on_random_logits():
  logits = jax.random.normal(jax.random.PRNGKey(2), (8, 32, 10)) * 2.0
  pred = jax.jit(predictive.classification_predictive)(logits)
  np.testing.assert_allclose(
    pred.predictive_entropy, pred.expected_entropy + pred.mutual_information, atol=1e-5
  )
  # Independently: MI = mean_k KL(p_k || p̄), in float64 numpy.
  p = np.asarray(jax.nn.softmax(logits.astype(jnp.float32)), np.float64)
  p_bar = p.mean(0)
  mean_kl = np.mean(np.sum(p * (np.log(p) - np.log(p_bar)), axis=-1), axis=0)
  np.testing.assert_allclose(pred.mutual_information, mean_kl, atol=1e-5)
  assert np.all(pred.mutual_information > 0)


def test_classification_predictive_rejects_unsampled_logits():
  with pytest.raises(ValueError, match=r"\[K, B, C\]"):
    predictive.classification_predictive(jnp.zeros((4, 10)))


def test_uncertainty_scores_by_number_of_samples():
  one = predictive.classification_predictive(_logits_from_probs([0.6, 0.3, 0.1]))
  scores = predictive.uncertainty_scores(one, 1)
  assert sorted(scores) == ["one_minus_max_prob", "softmax_entropy"]
  np.testing.assert_allclose(scores["one_minus_max_prob"], [0.4], atol=1e-6)
  np.testing.assert_allclose(scores["softmax_entropy"], _entropy([0.6, 0.3, 0.1]), atol=1e-6)

  two = predictive.classification_predictive(_logits_from_probs([0.5, 0.4, 0.1], [0.9, 0.0, 0.1]))
  scores = predictive.uncertainty_scores(two, 2)
  assert sorted(scores) == ["class_std", "mutual_information", "one_minus_max_prob", "predictive_entropy"]
  np.testing.assert_allclose(scores["one_minus_max_prob"], [0.3], atol=1e-6)  # p̄ = (0.7, 0.2, 0.1)
  np.testing.assert_allclose(scores["class_std"], [0.2], atol=1e-6)  # class 0: 0.5 vs 0.9


# ---------------------------------------------------------------- regression


def test_regression_predictive_is_the_mixture_moments():
  means = jnp.array([[0.0, 1.0], [2.0, 1.0]])  # K = 2, B = 2
  stds = jnp.array([[1.0, 0.5], [1.0, 1.5]])
  pred = predictive.regression_predictive(means, stds)
  np.testing.assert_allclose(pred.mean, [1.0, 1.0])
  np.testing.assert_allclose(pred.aleatoric_std, np.sqrt([1.0, (0.25 + 2.25) / 2]))
  np.testing.assert_allclose(pred.epistemic_std, [1.0, 0.0])
  np.testing.assert_allclose(pred.std, np.sqrt([2.0, 1.25]), rtol=1e-6)
  # Against draws from the mixture itself.
  rng = np.random.default_rng(0)
  k = rng.integers(0, 2, 200_000)
  draws = rng.normal(np.asarray(means)[k, 0], np.asarray(stds)[k, 0])
  assert draws.std() == pytest.approx(float(pred.std[0]), rel=0.01)


def test_central_interval_is_1_96_std_at_95_percent():
  lower, upper = predictive.central_interval(jnp.array([1.0]), jnp.array([2.0]), 0.95)
  np.testing.assert_allclose([lower[0], upper[0]], [1 - 1.959964 * 2, 1 + 1.959964 * 2], rtol=1e-5)
  with pytest.raises(ValueError, match="level"):
    predictive.central_interval(0.0, 1.0, 1.0)


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95])
def test_coverage_on_gaussian_data_is_nominal(level):
  rng = np.random.default_rng(1)
  n = 20_000
  mean, std = rng.normal(size=n), rng.uniform(0.2, 3.0, n)
  y = rng.normal(mean, std)
  lower, upper = predictive.central_interval(jnp.asarray(mean), jnp.asarray(std), level)
  # Binomial sd at n = 20000 is <= 0.0036.
  assert metrics.interval_coverage(y, lower, upper) == pytest.approx(level, abs=0.012)


def test_coverage_of_a_sampled_posterior_predictive_is_nominal():
  # y ~ N(θ, σ²), θ ~ N(m, τ²): the exact predictive is N(m, σ² + τ²). K posterior samples
  # μ_k ~ N(m, τ²) with noise σ must give intervals that cover 95% of fresh y.
  rng = np.random.default_rng(2)
  n, k, sigma, tau = 20_000, 256, 0.5, 1.0
  m = rng.normal(size=n)
  y = rng.normal(m + rng.normal(0, tau, n), sigma)
  means = m + rng.normal(0, tau, (k, n))
  pred = predictive.regression_predictive(jnp.asarray(means, jnp.float32), jnp.full((k, n), sigma))
  np.testing.assert_allclose(np.mean(pred.std), np.sqrt(sigma**2 + tau**2), rtol=0.01)
  lower, upper = predictive.central_interval(pred.mean, pred.std, 0.95)
  assert metrics.interval_coverage(y, lower, upper) == pytest.approx(0.95, abs=0.01)
  # Without the epistemic part the intervals are too narrow: they cover
  # P(|Z| < 1.96 σ / sqrt(σ² + τ²)) = erf(1.96 σ / sqrt(2 (σ² + τ²))) ≈ 0.62.
  lower, upper = predictive.central_interval(pred.mean, pred.aleatoric_std, 0.95)
  too_narrow = math.erf(1.959964 * sigma / math.sqrt(2 * (sigma**2 + tau**2)))
  assert metrics.interval_coverage(y, lower, upper) == pytest.approx(too_narrow, abs=0.01)


def test_map_batches_concatenates_in_order_including_a_short_last_batch():
  x = np.arange(10.0)
  out = predictive.map_batches(lambda i, xb: {"x2": xb * 2, "batch": np.full(len(xb), i)}, x, 4)
  np.testing.assert_array_equal(out["x2"], 2 * x)
  np.testing.assert_array_equal(out["batch"], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2])


def test_map_batches_with_padding_calls_one_shape_and_drops_the_padding():
  shapes = set()

  def fn(i, xb):
    shapes.add(xb.shape)
    return xb * 2

  out = predictive.map_batches(fn, np.arange(10.0), 4, pad=True)
  np.testing.assert_array_equal(out, 2 * np.arange(10.0))
  assert shapes == {(4,)}


# ---------------------------------------------------------------- the noise and the K-sample draw


def test_standard_normal_is_standard_normal_and_a_pure_function_of_the_key():
  from scipy import stats  # pylint: disable=import-outside-toplevel

  key = jax.random.PRNGKey(0)
  z = np.asarray(distributions.standard_normal(key, (100_000,)), np.float64)
  n = len(z)
  assert abs(z.mean()) < 4 / math.sqrt(n)
  assert abs(z.var() - 1.0) < 4 * math.sqrt(2 / n)
  assert abs(np.mean(z > 1.96) - 0.025) < 4 * math.sqrt(0.025 * 0.975 / n)
  assert stats.kstest(z, "norm").pvalue > 1e-3
  same = distributions.standard_normal(key, (100_000,))
  other = distributions.standard_normal(jax.random.PRNGKey(1), (100_000,))
  assert np.array_equal(z, np.asarray(same, np.float64))
  assert abs(np.corrcoef(z, np.asarray(other))[0, 1]) < 4 / math.sqrt(n)
  # Under vmap over keys (K samples) the rows are independent draws, not copies.
  rows = jax.vmap(lambda k: distributions.standard_normal(k, (20_000,)))(jax.random.split(key, 4))
  corr = np.corrcoef(np.asarray(rows))
  assert np.all(np.abs(corr[np.triu_indices(4, 1)]) < 4 / math.sqrt(20_000))


def _local_mlp(hidden_sizes, std):
  """A local-reparameterisation MLP on 6 inputs with 3 outputs, every posterior std = std."""
  m = ml_collections.ConfigDict({"hidden_sizes": hidden_sizes, "activation": "relu"})
  net = estimators.bayesian_transform(mlp.build(m, None, 3), "local")
  x = jax.random.uniform(jax.random.PRNGKey(1), (5, 6))
  weights = net.init(jax.random.PRNGKey(2), x)
  return net, posterior.init_posterior(weights, std, scale="log_std"), x


def test_k_samples_of_a_single_layer_have_the_closed_form_moments():
  """One Bayesian dense layer: the K outputs are N(x mu_W + mu_b, (x*x) std_W^2 + std_b^2),
  the pre-activation drawn from the layer's mean and variance computed once."""
  net, post_, x = _local_mlp((), 0.3)
  out = np.asarray(estimators.sample_outputs(net, post_, jax.random.PRNGKey(3), x, 4_000), np.float64)
  layer = post_["mean"]["mlp/~/linear_0"]
  mean = np.asarray(x @ layer["w"] + layer["b"])
  var = np.asarray((x * x) @ jnp.full_like(layer["w"], 0.09) + 0.09)
  np.testing.assert_allclose(out.mean(0), mean, atol=5 * np.sqrt(var.max() / 4_000))
  np.testing.assert_allclose(out.var(0), var, rtol=5 * math.sqrt(2 / 4_000))


def test_k_sample_draw_computes_the_first_layer_once_and_keeps_the_distribution():
  """vmap over the K keys leaves what does not depend on them unbatched: the first layer's
  mean and variance matmuls are [B, H] in the predictive, once for all K samples. The outputs
  have the distribution of the plain draw that runs the whole network K times."""
  net, post_, x = _local_mlp((16,), 0.2)
  k = 8
  jaxpr = jax.make_jaxpr(lambda p, r: estimators.sample_outputs(net, p, r, x, k))(
    post_, jax.random.PRNGKey(0)
  )
  dots = [e.outvars[0].aval.shape for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
  assert dots.count((5, 16)) == 2 and dots.count((k, 5, 16)) == 0  # the first layer: mean, variance
  assert dots.count((k, 5, 3)) == 2  # the second layer K times: mean, variance
  num = 4_000
  shared = np.asarray(estimators.sample_outputs(net, post_, jax.random.PRNGKey(4), x, num), np.float64)
  keys = jax.random.split(jax.random.PRNGKey(5), num)
  plain = jax.vmap(net.apply, in_axes=(None, 0, 0))(post_, keys, jnp.broadcast_to(x, (num, *x.shape)))
  plain = np.asarray(plain, np.float64)
  scale = np.sqrt(np.maximum(shared.var(0), plain.var(0)) / num)
  np.testing.assert_array_less(np.abs(shared.mean(0) - plain.mean(0)), 5 * scale)
  np.testing.assert_allclose(shared.var(0), plain.var(0), rtol=10 * math.sqrt(2 / num))
