"""Split conformal prediction: sets of classes, or intervals, that hold the true answer with
probability at least 1 − α, whatever the model, if calibration and test examples are
exchangeable (Vovk et al. 2005; Angelopoulos & Bates 2021's gentle introduction).

Recipe: a nonconformity score s(x, y) (higher = y fits x worse) on n calibration examples;
q̂ = the ceil((n + 1)(1 − α))-th smallest of them (quantile level ceil((n+1)(1−α))/n); the
prediction set of x is {y : s(x, y) <= q̂}. Coverage is then in [1 − α, 1 − α + 1/(n + 1))
in expectation over calibration sets (the upper bound for continuous, tie-free scores).

Scores, all from predictive probabilities [N, C] or a regressor's mean and std:
  LAC   s = 1 − p_y (least ambiguous sets: the smallest sets on average; Sadinle et al. 2019).
  APS   s = sum of the probabilities of the classes ranked above y, plus u · p_y with
        u ~ U(0, 1) (adaptive prediction sets, Romano et al. 2020, randomised: exact coverage);
        sets grow where the predictive is unsure.
  regression: s = |y − mean| / std, the interval mean ± q̂ · std (normalised residuals).
Pure numpy; calibrate on the run's validation split, never on the test split.
"""

from typing import Dict, Optional, Tuple

import numpy as np

METHODS = ("lac", "aps")


def check_alpha(alpha: float) -> float:
  """α must be a number in (0, 1): a one-line ValueError otherwise."""
  if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)) or not 0.0 < alpha < 1.0:
    raise ValueError(f"conformal alpha must be in (0, 1), got {alpha!r}")
  return float(alpha)


def _check_method(method: str) -> str:
  if method not in METHODS:
    raise ValueError(f"unknown conformal method {method!r}; valid: {', '.join(METHODS)}")
  return method


def quantile_rank(n: int, alpha: float) -> int:
  """k = ceil((n + 1)(1 − α)): q̂ is the k-th smallest of n calibration scores.

  A one-line ValueError when n < 1/α (then k can exceed n and no finite q̂ covers).
  """
  alpha = check_alpha(alpha)
  if n < 1.0 / alpha:
    raise ValueError(
      f"a calibration split of {n} examples is smaller than 1/alpha = {1.0 / alpha:g}: "
      f"alpha = {alpha:g} needs at least {int(np.ceil(1.0 / alpha - 1e-9))}"
    )
  # The small tolerance keeps (n+1)(1-α) that is an integer in exact arithmetic from rounding up.
  return min(int(np.ceil((n + 1) * (1.0 - alpha) - 1e-9)), n)


def conformal_quantile(scores, alpha: float) -> float:
  """q̂: the ceil((n + 1)(1 − α))-th smallest of the calibration scores [n]."""
  scores = np.asarray(scores, np.float64).ravel()
  k = quantile_rank(len(scores), alpha)
  return float(np.partition(scores, k - 1)[k - 1])


def _uniforms(n: int, seed: int) -> np.ndarray:
  return np.random.default_rng(seed).random(n)


def _class_scores(probs, method: str, seed: int) -> np.ndarray:
  """The score of every class of every example, [N, C] (see the module doc)."""
  probs = np.asarray(probs, np.float64)
  if probs.ndim != 2:
    raise ValueError(f"expected predictive probs [N, C], got shape {probs.shape}")
  if _check_method(method) == "lac":
    return 1.0 - probs
  order = np.argsort(-probs, axis=-1, kind="stable")
  sorted_p = np.take_along_axis(probs, order, axis=-1)
  above = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the classes ranked above
  scores = np.empty_like(probs)
  np.put_along_axis(scores, order, above, axis=-1)
  return scores + _uniforms(len(probs), seed)[:, None] * probs


def calibration_scores(probs, labels, method: str = "lac", seed: int = 0) -> np.ndarray:
  """The score [n] of each calibration example's true label (APS draws its u with `seed`)."""
  labels = np.asarray(labels).astype(np.int64)
  scores = _class_scores(probs, method, seed)
  if labels.shape != scores.shape[:1]:
    raise ValueError(f"expected labels [{len(scores)}], got shape {labels.shape}")
  return scores[np.arange(len(labels)), labels]


def calibrate(probs, labels, alpha: float, method: str = "lac", seed: int = 0) -> float:
  """q̂ of calibration probs [n, C] and labels [n] for miscoverage α."""
  check_alpha(alpha)
  return conformal_quantile(calibration_scores(probs, labels, method, seed), alpha)


def prediction_sets(probs, threshold: float, method: str = "lac", seed: int = 1) -> np.ndarray:
  """Boolean sets [N, C]: class c is in example i's set iff its score <= q̂ (`threshold`).

  APS draws the test examples' u with `seed` (use a different one than the calibration's).
  """
  return _class_scores(probs, method, seed) <= threshold


def coverage_and_size(sets, labels) -> Dict[str, float]:
  """{"coverage": fraction of labels inside their set, "mean_set_size", "empty_sets": fraction}."""
  sets, labels = np.asarray(sets, bool), np.asarray(labels).astype(np.int64)
  return {
    "coverage": float(np.mean(sets[np.arange(len(labels)), labels])),
    "mean_set_size": float(np.mean(sets.sum(-1))),
    "empty_sets": float(np.mean(~sets.any(-1))),
  }


def evaluate(
  cal_probs, cal_labels, test_probs, test_labels, alpha: float, method: str = "lac", seed: int = 0
):
  """Calibrate on (cal_probs [n, C], cal_labels [n]), score sets on the test arrays.

  Returns {"alpha", "method", "threshold": q̂, "calibration_examples": n, "coverage",
  "mean_set_size", "empty_sets"}.
  """
  threshold = calibrate(cal_probs, cal_labels, alpha, method, seed)
  sets = prediction_sets(test_probs, threshold, method, seed + 1)
  return {
    "alpha": float(alpha),
    "method": method,
    "threshold": threshold,
    "calibration_examples": len(np.asarray(cal_labels)),
    **coverage_and_size(sets, test_labels),
  }


def _random_splits(n: int, num_splits: int, cal_size: Optional[int], scored_apart: bool, seed: int):
  """(cal_size, [(calibration indices, the other indices)] of num_splits random partitions of n)."""
  cal_size = n // 2 if cal_size is None else int(cal_size)
  if not 0 < cal_size <= n or (not scored_apart and cal_size == n):
    raise ValueError(f"cal_size must be in [1, {n if scored_apart else n - 1}], got {cal_size}")
  rng = np.random.default_rng(seed)
  orders = [rng.permutation(n) for _ in range(num_splits)]
  return cal_size, [(order[:cal_size], order[cal_size:]) for order in orders]


def _summary(values) -> Dict[str, float]:
  return {
    "mean": float(np.mean(values)),
    "std": float(np.std(values)),
    "min": min(values),
    "max": max(values),
  }


def repeated_splits(
  cal_probs,
  cal_labels,
  alpha: float,
  method: str = "lac",
  num_splits: int = 20,
  cal_size: Optional[int] = None,
  test_probs=None,
  test_labels=None,
  seed: int = 0,
) -> Dict:
  """Coverage and set size over `num_splits` random calibration draws.

  Without test arrays, each split partitions the pool (cal_probs [N, C], cal_labels [N]) at
  random into cal_size calibration examples (default N // 2) and the rest as test examples:
  exchangeable by construction. With test arrays, each split calibrates on a random
  cal_size subset of the pool and is scored on all the test arrays.
  Returns {"alpha", "method", "num_splits", "calibration_examples", "coverage" / "mean_set_size":
  {"mean", "std", "min", "max"}, "per_split": the per-split coverages}.
  """
  cal_probs, cal_labels = np.asarray(cal_probs), np.asarray(cal_labels)
  cal_size, splits = _random_splits(len(cal_labels), num_splits, cal_size, test_probs is not None, seed)
  cover, size = [], []
  for split, (c, rest) in enumerate(splits):
    t_probs, t_labels = (
      (cal_probs[rest], cal_labels[rest]) if test_probs is None else (test_probs, test_labels)
    )
    r = evaluate(cal_probs[c], cal_labels[c], t_probs, t_labels, alpha, method, seed=2 * split + 1000 * seed)
    cover.append(r["coverage"])
    size.append(r["mean_set_size"])
  return {
    "alpha": float(alpha),
    "method": method,
    "num_splits": num_splits,
    "calibration_examples": cal_size,
    "coverage": _summary(cover),
    "mean_set_size": _summary(size),
    "per_split": cover,
  }


# ---------------------------------------------------------------- regression


def _regression_arrays(mean, std, y=None):
  arrays = [np.asarray(a, np.float64).ravel() for a in (mean, std) + (() if y is None else (y,))]
  if len({a.shape for a in arrays}) != 1:
    raise ValueError(f"mean, std and y must have one shape, got {[a.shape for a in arrays]}")
  if np.any(arrays[1] <= 0):
    raise ValueError("predictive std must be positive")
  return arrays


def regression_threshold(mean, std, y, alpha: float) -> float:
  """q̂ of the normalised residuals |y − mean| / std of n calibration targets (arrays [n])."""
  mean, std, y = _regression_arrays(mean, std, y)
  return conformal_quantile(np.abs(y - mean) / std, alpha)


def regression_intervals(mean, std, threshold: float) -> Tuple[np.ndarray, np.ndarray]:
  """(lower, upper) = mean ∓ q̂ · std, each [N]."""
  mean, std = _regression_arrays(mean, std)
  return mean - threshold * std, mean + threshold * std


def regression_evaluate(calibration, test, alpha: float) -> Dict:
  """Intervals mean ± q̂ · std calibrated on `calibration`, scored on `test`.

  Args:
    calibration, test: (mean, std, y) triples of arrays [n] and [m]: a predictive's mean and
      std (any std > 0: the total, or the aleatoric one) and the true targets.
  Returns:
    {"alpha", "method": "normalised_residual", "threshold": q̂, "calibration_examples",
     "coverage": the fraction of test targets inside, "mean_width": in the targets' units}.
  """
  threshold = regression_threshold(*calibration, alpha)
  lower, upper = regression_intervals(test[0], test[1], threshold)
  y = _regression_arrays(test[0], test[1], test[2])[2]
  return {
    "alpha": float(alpha),
    "method": "normalised_residual",
    "threshold": threshold,
    "calibration_examples": len(np.asarray(calibration[2]).ravel()),
    "coverage": float(np.mean((lower <= y) & (y <= upper))),
    "mean_width": float(np.mean(upper - lower)),
  }


def regression_repeated_splits(
  pool, alpha: float, num_splits: int = 20, cal_size: Optional[int] = None, test=None, seed: int = 0
) -> Dict:
  """Coverage and width of regression intervals over `num_splits` random calibration draws.

  Args:
    pool: (mean, std, y) arrays [N] to draw calibration sets of cal_size (default N // 2) from;
      without `test`, each split's other examples are its test set (exchangeable by construction).
    test: optional (mean, std, y) arrays [M] that every split is scored on instead.
  Returns:
    {"alpha", "method", "num_splits", "calibration_examples", "coverage" / "mean_width":
     {"mean", "std", "min", "max"}, "per_split": the per-split coverages}.
  """
  pool = tuple(_regression_arrays(*pool))
  cal_size, splits = _random_splits(len(pool[2]), num_splits, cal_size, test is not None, seed)
  cover, width = [], []
  for c, rest in splits:
    r = regression_evaluate(tuple(a[c] for a in pool), test or tuple(a[rest] for a in pool), alpha)
    cover.append(r["coverage"])
    width.append(r["mean_width"])
  return {
    "alpha": float(alpha),
    "method": "normalised_residual",
    "num_splits": num_splits,
    "calibration_examples": cal_size,
    "coverage": _summary(cover),
    "mean_width": _summary(width),
    "per_split": cover,
  }
