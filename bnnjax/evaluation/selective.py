"""Selective prediction: answer only the inputs the model is surest of, reject the rest.

Order the N examples by an uncertainty score (higher = less sure) and keep the k surest:
coverage k/N, selective risk = errors among them / k, selective accuracy = 1 − risk. The
risk-coverage curve has one point per k = 1..N; AURC is its mean, (1/N) Σ_k risk(k) (Geifman
et al. 2019), lower is better. The best any score can do with the same errors puts every error
last: E-AURC = AURC − that optimum. Examples with tied scores enter together; between the ends
of a tie the curve is the expectation over the tied examples' orders (errors spread evenly).

A rejection rule "reject when score > t" (e.g. t = the 99th percentile of the in-distribution
scores, bnnjax.metrics.rejection_rule) is one point of the curve: `at_threshold`.
Pure numpy; scores and labels as bnnjax.metrics states them.
"""

from typing import Dict, Mapping, NamedTuple, Sequence

import numpy as np

COVERAGE_GRID = tuple(np.round(np.arange(0.5, 1.0001, 0.05), 2))


class RiskCoverage(NamedTuple):
  """The risk-coverage curve of one score: k = 1..N kept examples, surest first."""

  coverage: np.ndarray  # [N] k / N
  risk: np.ndarray  # [N] expected errors among the k surest / k
  aurc: float  # mean of risk
  eaurc: float  # aurc − the aurc of a score that ranks every error last


def _check(correct, score):
  correct = np.asarray(correct, bool).ravel()
  score = np.asarray(score, np.float64).ravel()
  if correct.shape != score.shape or correct.size == 0:
    raise ValueError(f"need one score per example, got {score.shape} scores for {correct.shape} examples")
  if not np.all(np.isfinite(score)):
    raise ValueError("selective prediction scores must be finite")
  return correct, score


def optimal_aurc(num_examples: int, num_errors: int) -> float:
  """AURC when the E errors come last: (1/N) Σ_{k=N−E+1}^{N} (k − N + E) / k."""
  n, e = int(num_examples), int(num_errors)
  k = np.arange(n - e + 1, n + 1, dtype=np.float64)
  return float(np.sum((k - n + e) / k) / n)


def risk_coverage(correct, score) -> RiskCoverage:
  """The risk-coverage curve of boolean `correct` [N] ranked by `score` [N] (higher = less sure)."""
  correct, score = _check(correct, score)
  n = len(score)
  order = np.argsort(score, kind="stable")
  sorted_score, errors = score[order], (~correct[order]).astype(np.float64)
  # Tie groups [start, end): cumulative errors exact at each end, spread evenly inside.
  is_new = np.concatenate([[True], sorted_score[1:] != sorted_score[:-1]])
  starts = np.flatnonzero(is_new)
  ends = np.append(starts[1:], n)
  group_errors = np.add.reduceat(errors, starts)
  before = np.concatenate([[0.0], np.cumsum(group_errors)[:-1]])
  group = np.repeat(np.arange(len(starts)), ends - starts)
  k = np.arange(1, n + 1, dtype=np.float64)
  rate = group_errors / (ends - starts)
  cum_errors = before[group] + (k - starts[group]) * rate[group]
  risk = cum_errors / k
  aurc = float(np.mean(risk))
  return RiskCoverage(k / n, risk, aurc, aurc - optimal_aurc(n, int(errors.sum())))


def accuracy_at_coverage(curve: RiskCoverage, coverages: Sequence[float] = COVERAGE_GRID) -> np.ndarray:
  """Selective accuracy at each coverage c (the ceil(c · N) surest examples kept), [len(coverages)]."""
  n = len(curve.risk)
  k = np.clip(np.ceil(np.asarray(coverages, np.float64) * n - 1e-9).astype(int), 1, n)
  return 1.0 - curve.risk[k - 1]


def at_threshold(correct, score, threshold: float) -> Dict[str, float]:
  """The rule "reject when score > threshold": {"coverage": kept fraction, "accuracy" of the kept}.

  Accuracy is NaN when nothing is kept.
  """
  correct, score = _check(correct, score)
  kept = score <= threshold
  return {
    "threshold": float(threshold),
    "coverage": float(np.mean(kept)),
    "accuracy": float(np.mean(correct[kept])) if kept.any() else float("nan"),
  }


def report(
  probs,
  labels,
  scores: Mapping[str, np.ndarray],
  thresholds: Mapping[str, float] = None,
  coverages: Sequence[float] = COVERAGE_GRID,
) -> Dict:
  """Per uncertainty score: AURC, E-AURC, selective accuracy on a coverage grid, and the
  rejection rule's point when `thresholds` names one for that score.

  Args:
    probs: predictive probabilities [N, C]; labels: [N].
    scores: {name: [N]} (bnnjax.evaluation.classification.scores), higher = less sure.
    thresholds: {name: t}: the rule "reject when score > t" (e.g. the 99th percentile of the
      in-distribution scores, to apply the in-distribution rule to shifted data).
    coverages: the grid of coverages to report the accuracy at.
  """
  probs, labels = np.asarray(probs), np.asarray(labels)
  correct = np.argmax(probs, axis=-1) == labels
  out = {"coverage_grid": [float(c) for c in coverages]}
  for name, score in scores.items():
    curve = risk_coverage(correct, score)
    out[name] = {
      "aurc": curve.aurc,
      "eaurc": curve.eaurc,
      "accuracy_at_coverage": accuracy_at_coverage(curve, coverages).tolist(),
    }
    if thresholds and name in thresholds:
      out[name]["rejection_rule"] = at_threshold(correct, score, thresholds[name])
  return out
