"""Regression: accuracy and honesty of a predictive's mean and intervals."""

import numpy as np

from bnnjax import metrics, predictive

INTERVAL_LEVEL = 0.95


def report(pred: predictive.RegressionPredictive, targets, level: float = INTERVAL_LEVEL) -> dict:
  """RMSE, Gaussian NLL, coverage and width of the central `level` interval, mean stds.

  Args:
    pred: the predictive of N inputs (numpy arrays [N]).
    targets: [N] (or [N, 1]) true targets.
  """
  targets = np.asarray(targets, np.float64).reshape(len(pred.mean))
  lower, upper = predictive.central_interval(pred.mean, pred.std, level)
  return {
    "interval_level": level,
    **metrics.regression_metrics(targets, pred.mean, pred.std, np.asarray(lower), np.asarray(upper)),
    "mean_aleatoric_std": float(np.mean(pred.aleatoric_std)),
    "mean_epistemic_std": float(np.mean(pred.epistemic_std)),
  }


def input_grid(x_train, num: int = 400, margin: float = 0.5) -> np.ndarray:
  """A 1-D grid [num] reaching `margin` times the data's range beyond each end."""
  x_train = np.asarray(x_train).reshape(-1)
  lo, hi = x_train.min(), x_train.max()
  return np.linspace(lo - margin * (hi - lo), hi + margin * (hi - lo), num, dtype=np.float32)


def epistemic_near_and_far(x_grid, epistemic_std, x_train) -> dict:
  """Mean epistemic std on the grid near the training inputs and far from them.

  Near: within 5% of the data's range of a training x; far: beyond 25% (in gaps and beyond
  the ends); in gaps (where the data has one): between the smallest and largest training x,
  farther than 5% of the range from every one. A posterior that knows what it has not seen is
  less sure far away and in the gaps.
  """
  x_train, x_grid = np.asarray(x_train).reshape(-1), np.asarray(x_grid)
  span = x_train.max() - x_train.min()
  distance = np.abs(x_grid[:, None] - x_train[None]).min(axis=1)
  epistemic_std = np.asarray(epistemic_std)
  out = {
    "epistemic_std_near_data": float(epistemic_std[distance < 0.05 * span].mean()),
    "epistemic_std_far_from_data": float(epistemic_std[distance > 0.25 * span].mean()),
  }
  in_gaps = (distance > 0.05 * span) & (x_grid > x_train.min()) & (x_grid < x_train.max())
  if in_gaps.any():
    out["epistemic_std_in_gaps"] = float(epistemic_std[in_gaps].mean())
  return out


def original_units(rmse: float, nll: float, target_std: float) -> dict:
  """RMSE and per-point log-likelihood of a standardised target, in the target's own units.

  The model sees z = (y - mean) / target_std. Residuals scale with target_std, and the
  density of y is that of z divided by target_std (the Jacobian of the standardisation), so

      rmse_y = target_std * rmse_z,    log p(y) = log p(z) - log target_std.

  Args:
    rmse: the RMSE on the standardised scale.
    nll: the mean per-point negative log-likelihood on the standardised scale (nats).
    target_std: the std the target was divided by (the training rows').
  Returns:
    {"rmse": ..., "log_likelihood": ...} (higher log-likelihood is better).
  """
  if not target_std > 0:
    raise ValueError(f"target_std must be positive, got {target_std!r}")
  return {"rmse": float(rmse) * target_std, "log_likelihood": -float(nll) - float(np.log(target_std))}
