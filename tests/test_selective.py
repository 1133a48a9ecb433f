"""Known answers for selective prediction (bnnjax.evaluation.selective): risk-coverage curves and AURC."""

import numpy as np
import pytest

from bnnjax.evaluation import selective


def test_perfect_ranking_gives_the_analytic_aurc():
  # 4 examples, the one error ranked last: risks 0, 0, 0, 1/4 -> AURC 1/16, E-AURC 0
  curve = selective.risk_coverage([True, True, True, False], [0.1, 0.2, 0.3, 0.9])
  np.testing.assert_allclose(curve.risk, [0, 0, 0, 0.25])
  np.testing.assert_allclose(curve.coverage, [0.25, 0.5, 0.75, 1.0])
  assert curve.aurc == pytest.approx(1 / 16) and curve.eaurc == pytest.approx(0.0)
  # N = 10, E = 3 errors last: (1/10) (1/8 + 2/9 + 3/10)
  correct = np.array([True] * 7 + [False] * 3)
  assert selective.risk_coverage(correct, np.arange(10.0)).aurc == pytest.approx(
    (1 / 8 + 2 / 9 + 3 / 10) / 10
  )
  assert selective.optimal_aurc(10, 3) == pytest.approx((1 / 8 + 2 / 9 + 3 / 10) / 10)


def test_worst_ranking_and_ties():
  # the error first: risks 1, 1/2, 1/3, 1/4
  curve = selective.risk_coverage([False, True, True, True], [0.0, 0.1, 0.2, 0.3])
  assert curve.aurc == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
  # one constant score: every order equally likely, risk is the error rate at every coverage
  tied = selective.risk_coverage([True, False, True, True], np.zeros(4))
  np.testing.assert_allclose(tied.risk, 0.25)
  assert tied.aurc == pytest.approx(0.25)


def test_accuracy_at_coverage_and_threshold_rule():
  correct = np.array([True] * 8 + [False] * 2)
  score = np.arange(10.0)
  curve = selective.risk_coverage(correct, score)
  np.testing.assert_allclose(selective.accuracy_at_coverage(curve, [0.5, 0.8, 0.9, 1.0]), [1, 1, 8 / 9, 0.8])
  rule = selective.at_threshold(correct, score, 8.5)  # keeps scores <= 8.5: 9 examples, 8 right
  assert rule["coverage"] == pytest.approx(0.9) and rule["accuracy"] == pytest.approx(8 / 9)


def test_report_has_every_score():
  probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55]])
  labels = np.array([0, 1, 1, 0])  # right, wrong, right, wrong
  scores = {"one_minus_max_prob": 1 - probs.max(-1), "random": np.array([0.3, 0.1, 0.2, 0.4])}
  out = selective.report(probs, labels, scores, thresholds={"random": 0.25})
  # 1 - max p orders 0.1, 0.2, 0.4, 0.45: right, right, wrong, wrong -> risks 0, 0, 1/3, 1/2
  assert out["one_minus_max_prob"]["aurc"] == pytest.approx((1 / 3 + 1 / 2) / 4)
  assert out["one_minus_max_prob"]["eaurc"] == pytest.approx(0.0)
  assert out["random"]["rejection_rule"]["coverage"] == pytest.approx(0.5)
  with pytest.raises(ValueError, match="one score per example"):
    selective.risk_coverage([True, False], [0.1])
