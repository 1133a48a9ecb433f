"""Known answers for bnnjax.metrics: hand-computed small cases, sklearn as a reference on random data."""

import numpy as np
import pytest
from sklearn import metrics as skm

from bnnjax import metrics


# ---------------------------------------------------------------- classification


def test_accuracy_nll_brier_hand_case():
  probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]])
  labels = np.array([0, 1, 1])
  assert metrics.accuracy(probs, labels) == pytest.approx(2 / 3)
  assert metrics.nll(probs, labels) == pytest.approx(-(np.log(0.7) + np.log(0.3) + np.log(0.5)) / 3)
  # (0.3^2 + 0.2^2 + 0.1^2) + (0.1^2 + 0.7^2 + 0.6^2) + (0.25^2 + 0.5^2 + 0.25^2)
  assert metrics.brier(probs, labels) == pytest.approx((0.14 + 0.86 + 0.375) / 3)


def test_nll_of_zero_probability_is_finite():
  assert np.isfinite(metrics.nll(np.array([[1.0, 0.0]]), np.array([1])))


def test_ece_hand_case_one_example_per_bin():
  # Confidences 0.9, 0.78, 0.7, 0.55 fall in four different 1/15-wide bins.
  probs = np.array([[0.9, 0.1], [0.78, 0.22], [0.3, 0.7], [0.55, 0.45]])
  labels = np.array([0, 1, 1, 0])  # correct, wrong, correct, correct
  rel = metrics.reliability(probs, labels)
  assert rel.ece == pytest.approx((0.1 + 0.78 + 0.3 + 0.45) / 4)
  assert len(rel.bin_edges) == 16 and rel.count.sum() == 4
  np.testing.assert_array_equal(np.flatnonzero(rel.count), [8, 10, 11, 13])
  assert rel.confidence[11] == pytest.approx(0.78) and rel.accuracy[11] == 0.0
  assert np.isnan(rel.confidence[0]) and np.isnan(rel.accuracy[0])


def test_ece_hand_case_shared_bin_averages_before_the_gap():
  # 0.90 and 0.92 share bin (0.867, 0.933]: acc 1/2, conf 0.91 -> gap 0.41 (not mean |gap| = 0.5).
  # 1.0 sits in the last bin, correct -> gap 0.
  probs = np.array([[0.9, 0.1], [0.08, 0.92], [1.0, 0.0]])
  labels = np.array([0, 0, 0])
  rel = metrics.reliability(probs, labels)
  assert rel.ece == pytest.approx(2 / 3 * 0.41)
  assert rel.count[13] == 2 and rel.count[14] == 1


def test_ece_is_zero_when_accuracy_matches_confidence_in_every_bin():
  # 10 examples at confidence 0.8 (bin 11 of 15, away from edges), 8 correct.
  probs = np.tile([[0.79, 0.21]], (10, 1))
  labels = np.array([0] * 8 + [1] * 2)
  assert metrics.ece(probs, labels) == pytest.approx(0.01)  # |0.8 - 0.79|
  probs = np.tile([[0.8, 0.2]], (10, 1)) + np.array([[1e-3, -1e-3]])  # stays in one bin
  assert metrics.ece(probs, labels) == pytest.approx(1e-3)


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="probs"):
    metrics.accuracy(np.zeros((3, 2)), np.zeros(4))


# ---------------------------------------------------------------- OOD detection


def test_average_ranks_share_ties():
  np.testing.assert_allclose(metrics.average_ranks([3.0, 1.0, 3.0, 2.0, 3.0]), [4, 1, 4, 2, 4])


def test_auroc_hand_case_with_a_tie():
  score_in = [0.1, 0.4, 0.35, 0.8]
  score_out = [0.9, 0.4, 0.7]
  # Pairs (out > in): 0.9 beats 4; 0.4 beats 2 and ties 1 (counts 1/2); 0.7 beats 3 -> 9.5 / 12.
  assert metrics.auroc(score_in, score_out) == pytest.approx(9.5 / 12)


def test_auroc_extremes_and_all_ties():
  assert metrics.auroc([0, 1, 2], [3, 4]) == 1.0
  assert metrics.auroc([3, 4], [0, 1, 2]) == 0.0
  assert metrics.auroc([1, 1, 1], [1, 1]) == 0.5


def test_aupr_hand_case():
  # Thresholds 0.9: P=1, R=1/2; 0.4: P=2/3, R=1; 0.1: recall unchanged.
  assert metrics.aupr([0.1, 0.4], [0.9, 0.4]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_fpr95_hand_case():
  score_out = np.arange(1, 21)  # 19 of 20 flagged needs threshold 2
  score_in = np.array([0.0, 1.5, 2.0, 3.0, 10.0])  # 2, 3, 10 are >= 2
  assert metrics.fpr_at_tpr(score_in, score_out, 0.95) == pytest.approx(3 / 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ood_metrics_match_sklearn_on_random_scores_with_ties(seed):
  rng = np.random.default_rng(seed)
  # Rounded scores make many ties; OOD shifted up.
  score_in = np.round(rng.normal(0.0, 1.0, 300), 1)
  score_out = np.round(rng.normal(0.7, 1.0, 200), 1)
  y = np.r_[np.zeros(300), np.ones(200)]
  s = np.r_[score_in, score_out]
  assert metrics.auroc(score_in, score_out) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
  assert metrics.aupr(score_in, score_out) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
  fpr, tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
  assert metrics.fpr_at_tpr(score_in, score_out) == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)


def test_ood_scores_must_be_finite_and_nonempty():
  with pytest.raises(ValueError, match="finite"):
    metrics.auroc([0.0, np.nan], [1.0])
  with pytest.raises(ValueError, match="need in- and out"):
    metrics.auroc([], [1.0])


def test_rejection_rule_hand_case():
  score_in = np.arange(100.0)  # 99th percentile (linear) = 98.01: only 99 is above
  score_out = np.array([50.0, 98.5, 99.0, 200.0])
  rule = metrics.rejection_rule(score_in, score_out)
  assert rule.threshold == pytest.approx(98.01)
  assert rule.rejected_in == pytest.approx(0.01)
  assert rule.rejected_out == pytest.approx(0.75)


def test_rejection_rule_rejects_nothing_at_a_saturated_score():
  rule = metrics.rejection_rule(np.zeros(50), np.r_[np.zeros(3), np.ones(1)])
  assert (rule.threshold, rule.rejected_in, rule.rejected_out) == (0.0, 0.0, 0.25)


# ---------------------------------------------------------------- regression


def test_regression_metrics_hand_case():
  y = np.array([1.0, 2.0, 3.0, 4.0])
  mean = np.array([1.5, 2.0, 2.0, 4.0])
  assert metrics.rmse(y, mean) == pytest.approx(np.sqrt((0.25 + 0 + 1 + 0) / 4))
  assert metrics.interval_coverage(y, mean - 0.6, mean + 0.6) == 0.75
  std = np.full(4, 2.0)
  expected = 0.5 * np.log(2 * np.pi * 4.0) + np.mean((y - mean) ** 2) / (2 * 4.0)
  assert metrics.gaussian_nll(y, mean, std) == pytest.approx(expected, rel=1e-6)
  report = metrics.regression_metrics(y, mean, std, mean - np.array([0.6, 0.6, 1.0, 0.2]), mean + 0.6)
  assert report["coverage"] == 0.75 and report["mean_interval_width"] == pytest.approx(1.2)


def test_gaussian_nll_rejects_nonpositive_std():
  with pytest.raises(ValueError, match="std must be positive"):
    metrics.gaussian_nll([0.0], [0.0], [0.0])


def test_ood_report_combines_the_metrics_for_scores_defined_on_both_sets():
  score_in = {"a": np.arange(100.0), "only_in": np.zeros(100)}
  score_out = {"a": np.array([50.0, 98.5, 99.0, 200.0])}
  report = metrics.ood_report(score_in, score_out)
  assert list(report) == ["a"]
  # Out beats in in 50.5 + 99 + 99.5 + 100 = 349 of 400 pairs (ties count 1/2).
  assert report["a"]["auroc"] == pytest.approx(349 / 400)
  assert (report["a"]["rejected_in"], report["a"]["rejected_out"]) == pytest.approx((0.01, 0.75))
  assert report["a"]["mean_out"] == pytest.approx((50 + 98.5 + 99 + 200) / 4)


def test_confidences_on_interior_bin_edges_fall_in_the_lower_bin():
  """Bins are (lo, hi]: a confidence exactly on an edge belongs to the bin it closes."""
  probs = np.array([[0.5, 0.5], [0.75, 0.25], [0.25, 0.75], [1.0, 0.0]])
  labels = np.array([0, 0, 0, 0])
  rel = metrics.reliability(probs, labels, num_bins=4)  # edges 0, 1/4, 1/2, 3/4, 1: exact in binary
  np.testing.assert_array_equal(rel.count, [0, 1, 2, 1])  # 0.5 -> (1/4, 1/2]; 0.75 -> (1/2, 3/4]
  np.testing.assert_allclose(rel.confidence[1:], [0.5, 0.75, 1.0])
  np.testing.assert_allclose(rel.accuracy[1:], [1.0, 0.5, 1.0])
  assert rel.ece == pytest.approx((0.5 + 2 * 0.25 + 0.0) / 4)


def test_nll_of_zero_probability_is_the_documented_floor():
  # p(true) = 0 is floored at the smallest normal float64: -log(2.2e-308) = 708.40 nats.
  assert metrics.nll(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(
    -np.log(np.finfo(np.float64).tiny), rel=1e-12
  )
  assert metrics.nll(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([1, 0])) == pytest.approx(
    (-np.log(np.finfo(np.float64).tiny) + np.log(2)) / 2, rel=1e-12
  )
