"""Temperature scaling: one temperature T, fitted on the validation split, sharpens or softens
any classifier's predictive (Guo et al. 2017).

The temperature acts on the log of the predictive probabilities, p_T ∝ exp(log p̄ / T), where
p̄ is the K-sample mean of the softmaxes (for a point estimate, K = 1, this is exactly
softmax(logits / T)). That choice needs only the predictive, so it applies to every method
(mean field, ensembles, dropout, Laplace) alike; it does not rescale each sample's logits
before averaging, which would need the K sampled logits. T > 1 softens, T < 1 sharpens; the
argmax, and hence the accuracy, never changes.

T minimises the mean NLL of the validation labels. The NLL of softmax(β z) is convex in
β = 1/T, so its derivative, mean_n (E_{p_β}[z_n] − z_{n,y_n}), increases with β and the
minimiser is found by bisection on log β. Never fit it on the test split: the caller passes
the run's named validation split (`Run.validation_data()`).
"""

from typing import Dict

import numpy as np

from bnnjax import metrics

LOG_BETA_RANGE = (-7.0, 7.0)  # T in [e^-7, e^7] ≈ [0.001, 1100]


def _log_probs(probs) -> np.ndarray:
  """log p [N, C] in float64, zeros floored at the smallest normal float64 (finite logs)."""
  probs = np.asarray(probs, np.float64)
  if probs.ndim != 2:
    raise ValueError(f"expected predictive probs [N, C], got shape {probs.shape}")
  return np.log(np.maximum(probs, np.finfo(np.float64).tiny))


def _softmax(z: np.ndarray) -> np.ndarray:
  z = z - z.max(axis=-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=-1, keepdims=True)


def apply_temperature(probs, temperature: float) -> np.ndarray:
  """The tempered predictive p_T ∝ p^(1/T), [N, C] (rows sum to 1; the argmax is unchanged).

  Args:
    probs: predictive probabilities [N, C].
    temperature: T > 0.
  """
  if not temperature > 0 or not np.isfinite(temperature):
    raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
  return _softmax(_log_probs(probs) / temperature)


def _nll_gradient(z: np.ndarray, labels: np.ndarray, beta: float) -> float:
  """d/dβ of the mean NLL of softmax(β z): mean_n (E_{softmax(β z_n)}[z_n] − z_{n, y_n})."""
  p = _softmax(beta * z)
  return float(np.mean(np.sum(p * z, axis=-1) - z[np.arange(len(z)), labels]))


def fit_temperature(probs, labels, iterations: int = 60) -> float:
  """The T > 0 minimising the mean NLL of apply_temperature(probs, T) on labels.

  Args:
    probs: validation predictive probabilities [N, C].
    labels: validation labels [N].
    iterations: bisection steps on log(1/T) over LOG_BETA_RANGE (60 halve it to 1e-17).
  Returns:
    T as a Python float. A predictive whose NLL still falls at the range's end (e.g. every
    validation example right) gets that end: T = e^-7.
  """
  probs, labels = metrics._probs_and_labels(probs, labels)  # pylint: disable=protected-access
  if len(labels) == 0:
    raise ValueError("fit_temperature needs at least one validation example")
  z = _log_probs(probs)
  lo, hi = LOG_BETA_RANGE
  if _nll_gradient(z, labels, np.exp(lo)) >= 0:
    return float(np.exp(-lo))
  if _nll_gradient(z, labels, np.exp(hi)) <= 0:
    return float(np.exp(-hi))
  for _ in range(iterations):
    mid = 0.5 * (lo + hi)
    if _nll_gradient(z, labels, np.exp(mid)) < 0:
      lo = mid
    else:
      hi = mid
  return float(np.exp(-0.5 * (lo + hi)))


def report(
  val_probs,
  val_labels,
  test_probs,
  test_labels,
  num_resamples: int = 1000,
  level: float = 0.95,
  seed: int = 0,
) -> Dict:
  """Temperature scaling fitted on the validation predictive, judged on the test predictive.

  Args:
    val_probs, val_labels: the validation split's predictive [N_val, C] and labels [N_val].
    test_probs, test_labels: the test split's [N_test, C] and [N_test].
    num_resamples, level, seed: of the bootstrap interval of each ECE (metrics.ece_interval).
  Returns:
    {"temperature": T, "validation_examples": N_val, "before" / "after": {accuracy, nll, brier,
    ece, ece_interval: [lo, hi]}} on the test split, before and after scaling.
  """
  temperature = fit_temperature(val_probs, val_labels)
  out = {"temperature": temperature, "validation_examples": len(np.asarray(val_labels))}
  for name, probs in (("before", test_probs), ("after", apply_temperature(test_probs, temperature))):
    out[name] = {
      **metrics.classification_metrics(probs, test_labels),
      "ece_interval": list(metrics.ece_interval(probs, test_labels, num_resamples, level, seed)),
    }
  out["ece_interval_level"] = level
  return out
