"""Known answers for split conformal prediction (bnnjax.evaluation.conformal)."""

import numpy as np
import pytest

from bnnjax.evaluation import conformal


def test_quantile_rank_is_ceil_n_plus_one_times_one_minus_alpha():
  # n = 19, alpha = 0.1: (n + 1)(1 - alpha) = 18 exactly -> the 18th smallest (not 19th by rounding)
  assert conformal.quantile_rank(19, 0.1) == 18
  assert conformal.quantile_rank(100, 0.1) == 91  # ceil(90.9)
  assert conformal.quantile_rank(10, 0.1) == 10  # ceil(9.9)
  scores = np.arange(1, 101) / 100.0  # 0.01 .. 1.00, shuffled
  np.random.default_rng(0).shuffle(scores)
  assert conformal.conformal_quantile(scores, 0.1) == pytest.approx(0.91)
  assert conformal.conformal_quantile(scores, 0.05) == pytest.approx(0.96)  # ceil(95.95) = 96


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_alpha_outside_0_1_is_one_line(alpha):
  with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
    conformal.check_alpha(alpha)


def test_calibration_split_smaller_than_one_over_alpha():
  with pytest.raises(ValueError, match="calibration split of 9 examples is smaller than 1/alpha = 10"):
    conformal.conformal_quantile(np.zeros(9), 0.1)
  with pytest.raises(ValueError, match="unknown conformal method 'raps'"):
    conformal.calibrate(np.full((20, 2), 0.5), np.zeros(20, int), 0.1, "raps")


def test_lac_and_aps_scores_by_hand():
  probs = np.array([[0.5, 0.3, 0.2]])
  np.testing.assert_allclose(conformal.calibration_scores(probs, [1], "lac"), [0.7])
  u = np.random.default_rng(3).random(1)[0]
  # APS: mass above class 2 is 0.5 + 0.3, plus u * 0.2
  np.testing.assert_allclose(conformal.calibration_scores(probs, [2], "aps", seed=3), [0.8 + u * 0.2])
  sets = conformal.prediction_sets(probs, 0.75, "lac")  # 1 - p <= 0.75 <=> p >= 0.25
  np.testing.assert_array_equal(sets, [[True, True, False]])


def _synthetic(n, c=4, seed=0):
  """Labels drawn from Dirichlet probs: a calibrated model whose sets must cover 1 - alpha."""
  rng = np.random.default_rng(seed)
  probs = rng.dirichlet(np.ones(c) * 0.5, n)
  labels = (rng.random(n)[:, None] > np.cumsum(probs, -1)).sum(-1)
  return probs, np.minimum(labels, c - 1)


@pytest.mark.parametrize("method", ["lac", "aps"])
@pytest.mark.parametrize("alpha", [0.1, 0.05])
def test_coverage_over_random_splits_is_one_minus_alpha(method, alpha):
  probs, labels = _synthetic(4000, seed=1)
  out = conformal.repeated_splits(probs, labels, alpha, method, num_splits=20, cal_size=2000)
  # mean coverage in [1 - alpha, 1 - alpha + 1/(n+1)) in expectation; 20 splits of 2000: std of the mean ~.002
  assert abs(out["coverage"]["mean"] - (1 - alpha)) < 0.01
  assert out["num_splits"] == 20 and len(out["per_split"]) == 20


def test_aps_sets_grow_where_the_predictive_is_unsure():
  probs, labels = _synthetic(4000, seed=2)
  q = conformal.calibrate(probs, labels, 0.1, "aps")
  sure, unsure = np.array([[0.97, 0.01, 0.01, 0.01]] * 200), np.full((200, 4), 0.25)
  size = lambda p: conformal.prediction_sets(p, q, "aps").sum(-1).mean()
  assert size(sure) < 1.5 < 2.5 < size(unsure)


def test_regression_intervals_cover_a_gaussian():
  rng = np.random.default_rng(0)
  mean, std = rng.normal(size=4000), rng.uniform(0.5, 2.0, 4000)
  y = mean + std * rng.standard_normal(4000)
  q = conformal.regression_threshold(mean[:2000], std[:2000], y[:2000], 0.05)
  assert q == pytest.approx(1.96, abs=0.1)  # the normalised residuals are N(0, 1): |z| quantile 1.96
  lower, upper = conformal.regression_intervals(mean[2000:], std[2000:], q)
  assert np.mean((lower <= y[2000:]) & (y[2000:] <= upper)) == pytest.approx(0.95, abs=0.015)
  with pytest.raises(ValueError, match="one shape"):
    conformal.regression_threshold(mean, std[:10], y, 0.1)


def test_repeated_regression_splits_cover_a_gaussian_and_each_split_is_worked_by_hand():
  rng = np.random.default_rng(1)
  mean, std = rng.normal(size=4000), rng.uniform(0.5, 2.0, 4000)
  y = mean + std * rng.standard_normal(4000)
  out = conformal.regression_repeated_splits((mean, std, y), 0.1, num_splits=20, cal_size=1000, seed=3)
  assert out["coverage"]["mean"] == pytest.approx(0.9, abs=0.01) and out["calibration_examples"] == 1000
  assert out["mean_width"]["mean"] == pytest.approx(2 * 1.645 * std.mean(), rel=0.03)
  order = np.random.default_rng(3).permutation(4000)  # the first split: calibrate on 1000, score the rest
  cal, rest = order[:1000], order[1000:]
  q = conformal.regression_threshold(mean[cal], std[cal], y[cal], 0.1)
  assert out["per_split"][0] == np.mean(np.abs(y[rest] - mean[rest]) <= q * std[rest])
  # A given test set is what every split is scored on: here one that any interval covers.
  held = (mean[:50], std[:50], mean[:50])
  fixed = conformal.regression_repeated_splits((mean, std, y), 0.1, num_splits=3, test=held)
  assert fixed["per_split"] == [1.0, 1.0, 1.0]
  with pytest.raises(ValueError, match="cal_size must be in"):
    conformal.regression_repeated_splits((mean, std, y), 0.1, cal_size=4000)
