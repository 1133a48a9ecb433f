"""Known answers for temperature scaling (bnnjax.evaluation.recalibration) and the ECE bootstrap interval."""

import numpy as np
import pytest

from bnnjax import metrics
from bnnjax.evaluation import recalibration


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _tempered_data(true_temperature, n=20000, c=5, seed=0):
  """Labels drawn from softmax(z); the model reports softmax(z / true_temperature): mis-calibrated by it."""
  rng = np.random.default_rng(seed)
  z = 3.0 * rng.standard_normal((n, c))
  p_true = _softmax(z)
  labels = (rng.random(n)[:, None] > np.cumsum(p_true, -1)).sum(-1)
  return _softmax(z / true_temperature), labels


def test_apply_temperature_is_the_softmax_of_logits_over_t():
  logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]])
  probs = _softmax(logits)
  np.testing.assert_allclose(recalibration.apply_temperature(probs, 2.0), _softmax(logits / 2.0), rtol=1e-12)
  np.testing.assert_allclose(recalibration.apply_temperature(probs, 1.0), probs, rtol=1e-12)
  with pytest.raises(ValueError, match="temperature"):
    recalibration.apply_temperature(probs, 0.0)


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_recovers_the_temperature_that_miscalibrated_the_model(true_temperature):
  # The model's probs are softmax(z / T0) of labels from softmax(z): the NLL minimiser is T = 1 / T0... in
  # the model's own log-probs, dividing by 1/T0 undoes it.
  probs, labels = _tempered_data(true_temperature)
  fitted = recalibration.fit_temperature(probs, labels)
  assert fitted == pytest.approx(1.0 / true_temperature, rel=0.05)
  # the minimiser: the NLL is higher a little to either side
  nll = lambda t: metrics.nll(recalibration.apply_temperature(probs, t), labels)
  assert nll(fitted) < min(nll(fitted * 1.05), nll(fitted / 1.05))


def test_fit_keeps_accuracy_and_lowers_ece():
  probs, labels = _tempered_data(0.4, seed=1)  # over-confident
  fitted = recalibration.fit_temperature(probs[:10000], labels[:10000])
  after = recalibration.apply_temperature(probs[10000:], fitted)
  assert metrics.accuracy(after, labels[10000:]) == metrics.accuracy(probs[10000:], labels[10000:])
  assert metrics.ece(after, labels[10000:]) < 0.3 * metrics.ece(probs[10000:], labels[10000:])


def test_fit_at_the_range_end_when_every_example_is_right():
  probs = np.array([[0.9, 0.1], [0.2, 0.8]])
  assert recalibration.fit_temperature(probs, np.array([0, 1])) == pytest.approx(np.exp(-7.0))


def test_report_fits_on_validation_and_scores_test():
  probs, labels = _tempered_data(0.4, seed=2)
  out = recalibration.report(probs[:10000], labels[:10000], probs[10000:], labels[10000:], num_resamples=50)
  assert out["temperature"] == pytest.approx(2.5, rel=0.05) and out["validation_examples"] == 10000
  assert out["after"]["nll"] < out["before"]["nll"] and out["after"]["accuracy"] == out["before"]["accuracy"]
  lo, hi = out["before"]["ece_interval"]
  assert lo < out["before"]["ece"] < hi


def test_ece_interval_is_the_percentile_of_resampled_eces():
  rng = np.random.default_rng(5)
  probs, labels = rng.dirichlet(np.ones(3), 300), rng.integers(0, 3, 300)
  lo, hi = metrics.ece_interval(probs, labels, num_resamples=100, level=0.9, seed=7)
  draws = np.random.default_rng(7)
  eces = [metrics.ece(probs[i], labels[i]) for i in (draws.integers(0, 300, 300) for _ in range(100))]
  assert (lo, hi) == pytest.approx((np.percentile(eces, 5), np.percentile(eces, 95)), abs=1e-12)
  # one example in each of three bins: every resample's ECE is a mean of their gaps .05, .75, .45
  probs = np.array([[0.95, 0.05], [0.75, 0.25], [0.45, 0.55]])
  lo, hi = metrics.ece_interval(probs, np.array([0, 1, 1]), num_resamples=200)
  assert 0.05 <= lo < hi <= 0.75
  assert metrics.ece_interval(probs[:1].repeat(10, 0), np.zeros(10, int), 50) == pytest.approx((0.05, 0.05))
