"""The ELBO's pieces against hand-computed values."""

import jax.numpy as jnp
import numpy as np

from bnnjax import objectives


def test_kl_weight_warms_up_linearly_then_stays_at_beta_times_temperature():
  weight = lambda step: float(objectives.kl_weight(step, beta=2.0, warmup_steps=100, temperature=0.5))
  assert [weight(0), weight(25), weight(100), weight(1000)] == [0.0, 0.25, 1.0, 1.0]
  assert float(objectives.kl_weight(7)) == 1.0


def test_per_example_loss_divides_the_kl_by_the_training_set_size():
  np.testing.assert_allclose(objectives.per_example_loss(0.3, 600.0, 60000), 0.31, rtol=1e-6)
  np.testing.assert_allclose(objectives.per_example_loss(0.3, 600.0, 60000, 0.5), 0.305, rtol=1e-6)


def test_categorical_nlls_expected_versus_predictive():
  # Two samples of one example with 2 classes: p(y=0) = 0.5 and 0.9.
  logits = jnp.log(jnp.array([[[0.5, 0.5]], [[0.9, 0.1]]]))
  labels = jnp.array([0])
  np.testing.assert_allclose(
    objectives.categorical_nll(logits, labels), -(np.log(0.5) + np.log(0.9)) / 2, rtol=1e-6
  )
  np.testing.assert_allclose(objectives.categorical_predictive_nll(logits, labels), [-np.log(0.7)], rtol=1e-6)


def test_gaussian_nlls_expected_versus_predictive():
  predictions = jnp.array([[0.0, 1.0], [2.0, 1.0]])  # K = 2 samples, B = 2
  targets = jnp.array([1.0, 1.0])
  log_n = lambda y, m, s: -0.5 * ((y - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
  expected = -(2 * log_n(1, 0, 2.0) + 2 * log_n(1, 1, 2.0)) / 4
  np.testing.assert_allclose(objectives.gaussian_nll(predictions, targets, 2.0), expected, rtol=1e-6)
  mixture = [-np.log(0.5 * np.exp(log_n(1, 0, 2.0)) + 0.5 * np.exp(log_n(1, 2, 2.0))), -log_n(1, 1, 2.0)]
  np.testing.assert_allclose(
    objectives.gaussian_predictive_nll(predictions, targets, 2.0), mixture, rtol=1e-6
  )
