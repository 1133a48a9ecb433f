"""How good and how honest are the predictions: accuracy, calibration, OOD detection, intervals.

Pure numpy on host arrays (evaluation runs once over a split, after the jitted
forward passes), returning Python floats or small arrays.

Conventions, stated once:
  * Probabilities are the predictive (Monte Carlo mean) probabilities [N, C].
  * Brier score = mean over examples of sum_c (p_c - 1[y = c])^2 (range [0, 2]).
  * ECE uses equal-width confidence bins (lo, hi], the first one [0, 1/15]; the
    confidence of an example is its largest predicted probability.
  * OOD detection: out-of-distribution examples are the POSITIVE class and a
    higher score means "more out-of-distribution" (e.g. entropy, mutual
    information, 1 - max prob). AUROC, AUPR and FPR at 95% TPR all use that.
"""

from typing import Dict, NamedTuple, Tuple

import numpy as np

from bnnjax import distributions

NUM_ECE_BINS = 15


# ---------------------------------------------------------------- classification


def _probs_and_labels(probs, labels):
  probs, labels = np.asarray(probs, np.float64), np.asarray(labels)
  if probs.ndim != 2 or labels.shape != probs.shape[:1]:
    raise ValueError(f"expected probs [N, C] and labels [N], got shapes {probs.shape} and {labels.shape}")
  return probs, labels.astype(np.int64)


def accuracy(probs, labels) -> float:
  """Fraction of argmax_c probs [N, C] equal to labels [N]."""
  probs, labels = _probs_and_labels(probs, labels)
  return float(np.mean(np.argmax(probs, axis=-1) == labels))


def nll(probs, labels) -> float:
  """Mean negative log predictive probability of the true label (nats).

  Probabilities are floored at the smallest normal float64 so that a confidently
  wrong prediction gives a large finite NLL rather than inf.
  """
  probs, labels = _probs_and_labels(probs, labels)
  p_true = np.take_along_axis(probs, labels[:, None], axis=-1)[:, 0]
  return float(-np.mean(np.log(np.maximum(p_true, np.finfo(np.float64).tiny))))


def brier(probs, labels) -> float:
  """Mean over examples of sum_c (p_c - one_hot_c)^2."""
  probs, labels = _probs_and_labels(probs, labels)
  one_hot = np.eye(probs.shape[-1])[labels]
  return float(np.mean(np.sum((probs - one_hot) ** 2, axis=-1)))


class Reliability(NamedTuple):
  """Reliability-diagram data. Empty bins have count 0 and NaN confidence/accuracy."""

  ece: float
  bin_edges: np.ndarray  # [num_bins + 1], from 0 to 1
  confidence: np.ndarray  # [num_bins] mean max-probability in the bin
  accuracy: np.ndarray  # [num_bins] fraction correct in the bin
  count: np.ndarray  # [num_bins] number of examples in the bin


def reliability(probs, labels, num_bins: int = NUM_ECE_BINS) -> Reliability:
  """Expected calibration error, ECE = sum_b (n_b / N) |acc_b - conf_b|, and its bins."""
  probs, labels = _probs_and_labels(probs, labels)
  if num_bins < 1:
    raise ValueError(f"num_bins must be >= 1, got {num_bins}")
  confidence = np.max(probs, axis=-1)
  correct = (np.argmax(probs, axis=-1) == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  # Bin b holds (edges[b], edges[b+1]]; confidence 0 (impossible for a
  # distribution, but harmless) falls in bin 0.
  bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
  count = np.bincount(bins, minlength=num_bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    conf_mean = np.bincount(bins, weights=confidence, minlength=num_bins) / count
    acc_mean = np.bincount(bins, weights=correct, minlength=num_bins) / count
  gaps = np.where(count > 0, np.abs(acc_mean - conf_mean), 0.0)
  ece = float(np.sum(count * gaps) / len(labels))
  return Reliability(ece, edges, conf_mean, acc_mean, count)


def ece(probs, labels, num_bins: int = NUM_ECE_BINS) -> float:
  """The expected calibration error of `reliability`."""
  return reliability(probs, labels, num_bins).ece


def ece_interval(
  probs, labels, num_resamples: int = 1000, level: float = 0.95, seed: int = 0, num_bins: int = NUM_ECE_BINS
) -> Tuple[float, float]:
  """A percentile bootstrap interval (lo, hi) of the ECE: examples resampled with replacement.

  Differences of a few thousandths between two ECEs are often inside it. Seeded
  (numpy default_rng(seed)); num_resamples >= 1; level in (0, 1).
  """
  probs, labels = _probs_and_labels(probs, labels)
  if num_resamples < 1 or not 0.0 < level < 1.0:
    raise ValueError(f"need num_resamples >= 1 and level in (0, 1), got {num_resamples} and {level}")
  confidence = np.max(probs, axis=-1)
  correct = (np.argmax(probs, axis=-1) == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  bins = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
  rng, n, eces = np.random.default_rng(seed), len(labels), np.empty(num_resamples)
  for r in range(num_resamples):
    i = rng.integers(0, n, n)
    gap = np.bincount(bins[i], weights=confidence[i] - correct[i], minlength=num_bins)
    eces[r] = np.sum(np.abs(gap)) / n  # sum_b |sum_{i in b} (conf_i - correct_i)| / N = ECE
  tail = 100.0 * (1.0 - level) / 2.0
  return float(np.percentile(eces, tail)), float(np.percentile(eces, 100.0 - tail))


def classification_metrics(probs, labels) -> Dict[str, float]:
  """Accuracy, NLL, Brier and ECE of predictive probs [N, C] against labels [N]."""
  return {
    "accuracy": accuracy(probs, labels),
    "nll": nll(probs, labels),
    "brier": brier(probs, labels),
    "ece": ece(probs, labels),
  }


# ---------------------------------------------------------------- OOD detection


def _scores(score_in, score_out):
  score_in = np.asarray(score_in, np.float64).ravel()
  score_out = np.asarray(score_out, np.float64).ravel()
  if score_in.size == 0 or score_out.size == 0:
    raise ValueError(f"need in- and out-of-distribution scores, got {score_in.size} and {score_out.size}")
  if not (np.all(np.isfinite(score_in)) and np.all(np.isfinite(score_out))):
    raise ValueError("OOD scores must be finite")
  return score_in, score_out


def average_ranks(values) -> np.ndarray:
  """1-based ranks of values; tied values share the mean of the ranks they span."""
  values = np.asarray(values)
  order = np.argsort(values, kind="mergesort")
  sorted_values = values[order]
  # Each run of equal values [start, end) gets rank (start + 1 + end) / 2.
  is_new = np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])
  starts = np.flatnonzero(is_new)
  ends = np.append(starts[1:], len(values))
  run_rank = (starts + 1 + ends) / 2.0
  ranks = np.empty(len(values))
  ranks[order] = np.repeat(run_rank, ends - starts)
  return ranks


def auroc(score_in, score_out) -> float:
  """P(score_out > score_in) + P(tie) / 2: the Mann-Whitney statistic, from average ranks."""
  score_in, score_out = _scores(score_in, score_out)
  ranks = average_ranks(np.concatenate([score_in, score_out]))
  n_in, n_out = len(score_in), len(score_out)
  rank_sum_out = np.sum(ranks[n_in:])
  return float((rank_sum_out - n_out * (n_out + 1) / 2.0) / (n_in * n_out))


def _detections_by_threshold(score_in, score_out):
  """True and false positives when flagging score >= t, for each distinct t, descending."""
  scores = np.concatenate([score_in, score_out])
  is_out = np.concatenate([np.zeros(len(score_in)), np.ones(len(score_out))])
  order = np.argsort(-scores, kind="mergesort")
  scores, is_out = scores[order], is_out[order]
  last_of_run = np.append(scores[1:] != scores[:-1], True)  # ties enter together
  true_pos = np.cumsum(is_out)[last_of_run]
  false_pos = np.cumsum(1.0 - is_out)[last_of_run]
  return scores[last_of_run], true_pos, false_pos


def aupr(score_in, score_out) -> float:
  """Area under precision-recall with OOD as positive: average precision, sum_t (R_t - R_{t-1}) P_t.

  The step-wise (non-interpolated) definition, as sklearn's average_precision_score.
  """
  score_in, score_out = _scores(score_in, score_out)
  _, true_pos, false_pos = _detections_by_threshold(score_in, score_out)
  precision = true_pos / (true_pos + false_pos)
  recall = true_pos / len(score_out)
  return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def fpr_at_tpr(score_in, score_out, tpr: float = 0.95) -> float:
  """Fraction of in-distribution examples flagged at the highest threshold flagging >= tpr of OOD ones.

  Flagging is score >= t; t is the ceil(tpr * n_out)-th largest OOD score, so
  ties at t are flagged together (no interpolation between ROC points).
  """
  if not 0.0 < tpr <= 1.0:
    raise ValueError(f"tpr must be in (0, 1], got {tpr}")
  score_in, score_out = _scores(score_in, score_out)
  needed = int(np.ceil(tpr * len(score_out) - 1e-9))
  threshold = np.sort(score_out)[::-1][needed - 1]
  return float(np.mean(score_in >= threshold))


def ood_metrics(score_in, score_out) -> Dict[str, float]:
  """AUROC, AUPR and FPR at 95% TPR of scores [N_in] and [N_out] (OOD positive, higher = OOD)."""
  return {
    "auroc": auroc(score_in, score_out),
    "aupr": aupr(score_in, score_out),
    "fpr95": fpr_at_tpr(score_in, score_out, 0.95),
  }


class Rejection(NamedTuple):
  """The rejection rule's threshold and the fractions it rejects in and out of distribution."""

  threshold: float
  rejected_in: float  # fraction of in-distribution examples rejected (about 1 - percentile/100)
  rejected_out: float  # fraction of out-of-distribution examples rejected


def rejection_rule(score_in, score_out, percentile: float = 99.0) -> Rejection:
  """Reject an input whose score exceeds the `percentile`-th percentile of in-distribution scores.

  The percentile uses numpy's default linear interpolation; rejection is
  score > threshold (strict), so a saturated score (e.g. many exact zeros)
  rejects nothing at that value.
  """
  if not 0.0 <= percentile <= 100.0:
    raise ValueError(f"percentile must be in [0, 100], got {percentile}")
  score_in, score_out = _scores(score_in, score_out)
  threshold = float(np.percentile(score_in, percentile))
  return Rejection(threshold, float(np.mean(score_in > threshold)), float(np.mean(score_out > threshold)))


def ood_report(
  scores_in: Dict[str, np.ndarray], scores_out: Dict[str, np.ndarray], percentile: float = 99.0
) -> Dict[str, Dict[str, float]]:
  """Per score defined on both sets: AUROC, AUPR, FPR95, the rejection rule and the mean scores."""
  report = {}
  for name in (n for n in scores_in if n in scores_out):
    rule = rejection_rule(scores_in[name], scores_out[name], percentile)
    report[name] = {
      **ood_metrics(scores_in[name], scores_out[name]),
      "rejection_threshold": rule.threshold,
      "rejected_in": rule.rejected_in,
      "rejected_out": rule.rejected_out,
      "mean_in": float(np.mean(scores_in[name])),
      "mean_out": float(np.mean(scores_out[name])),
    }
  return report


# ---------------------------------------------------------------- regression


def _same_shape(**arrays):
  arrays = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
  shapes = {k: v.shape for k, v in arrays.items()}
  if len(set(shapes.values())) != 1:
    raise ValueError(f"shapes differ: {shapes}")
  return arrays.values()


def interval_coverage(y, lower, upper) -> float:
  """Fraction of targets inside [lower, upper]."""
  y, lower, upper = _same_shape(y=y, lower=lower, upper=upper)
  return float(np.mean((lower <= y) & (y <= upper)))


def rmse(y, mean) -> float:
  """Root mean squared error of predictive means [N] against targets [N]."""
  y, mean = _same_shape(y=y, mean=mean)
  return float(np.sqrt(np.mean((y - mean) ** 2)))


def gaussian_nll(y, mean, std) -> float:
  """Mean of -log N(y; mean, std^2) (nats): the Gaussian approximation of the predictive."""
  y, mean, std = _same_shape(y=y, mean=mean, std=std)
  if np.any(std <= 0):
    raise ValueError("predictive std must be positive")
  return float(-np.mean(distributions.gaussian_log_prob(y, mean, std)))


def regression_metrics(y, mean, std, lower, upper) -> Dict[str, float]:
  """RMSE, NLL, coverage and mean width of the intervals: coverage alone rewards wide ones."""
  return {
    "rmse": rmse(y, mean),
    "nll": gaussian_nll(y, mean, std),
    "coverage": interval_coverage(y, lower, upper),
    "mean_interval_width": float(np.mean(np.asarray(upper) - np.asarray(lower))),
  }
