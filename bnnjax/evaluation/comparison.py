"""Methods side by side: one row per method, each figure a mean ± standard error over seeds.

Every row comes from the same `Run.evaluate` (same test split, same OOD sets, same K), so a
difference between rows is a difference between methods. The OOD score of the headline
AUROC is fixed before any OOD result is seen: the mutual information for a method that draws
several predictive samples, the maximum probability (as 1 − max p) for one that draws one;
every other score's AUROC is kept beside it.
"""

import math
from typing import Dict, List, Mapping, Sequence

import numpy as np

IN_DISTRIBUTION = ("accuracy", "nll", "brier", "ece")


def headline_score(num_samples: int) -> str:
  """The OOD score fixed in advance for a predictive of `num_samples` draws."""
  return "mutual_information" if num_samples > 1 else "one_minus_max_prob"


def run_figures(
  report: Mapping, train_seconds: float, predict_seconds: float, num_params: int
) -> Dict[str, float]:
  """One run's flat figures from its `Run.evaluate` report.

  Returns: accuracy, nll, brier, ece; auroc/<ood set> (the headline score) and
  auroc/<ood set>/<score> (every score); train_s, predict_s (the test split), params.
  """
  figures = {k: float(report["in_distribution"][k]) for k in IN_DISTRIBUTION}
  score = headline_score(report["num_samples"])
  for name, by_score in report["ood"].items():
    figures[f"auroc/{name}"] = float(by_score[score]["auroc"])
    for other, values in by_score.items():
      if isinstance(values, dict):  # beside the scores: num_examples
        figures[f"auroc/{name}/{other}"] = float(values["auroc"])
  figures.update(train_s=float(train_seconds), predict_s=float(predict_seconds), params=float(num_params))
  return figures


def mean_and_error(values: Sequence[float]) -> Dict[str, float]:
  """{"mean", "se", "n"}: the sample mean and its standard error (std with ddof=1 over √n;
  nan for a single value)."""
  values = np.asarray(values, np.float64)
  se = float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
  return {"mean": float(values.mean()), "se": se, "n": len(values)}


def summarise(rows: Mapping[str, Sequence[Mapping[str, float]]]) -> Dict[str, Dict[str, Dict[str, float]]]:
  """{method: {figure: mean_and_error over its runs}}; a figure missing from a run is left out."""
  table = {}
  for method, runs in rows.items():
    names = sorted(set.intersection(*(set(r) for r in runs))) if runs else []
    table[method] = {name: mean_and_error([r[name] for r in runs]) for name in names}
  return table


def _cell(stats: Mapping[str, float], digits: int) -> str:
  if math.isnan(stats["se"]):
    return f"{stats['mean']:.{digits}f}"
  return f"{stats['mean']:.{digits}f} ± {stats['se']:.{digits}f}"


def markdown(table: Mapping[str, Mapping[str, Mapping[str, float]]], ood: Sequence[str]) -> List[str]:
  """The headline table: one line per method (n seeds), the fixed-score AUROC per OOD set."""
  columns = [*IN_DISTRIBUTION, *(f"auroc/{name}" for name in ood), "train_s", "predict_s", "params"]
  digits = {"accuracy": 4, "nll": 4, "brier": 4, "ece": 4, "train_s": 0, "predict_s": 2, "params": 0}
  lines = [
    "| method | n | " + " | ".join(columns) + " |",
    "|---|---|" + "---|" * len(columns),
  ]
  for method, figures in table.items():
    n = max((s["n"] for s in figures.values()), default=0)
    cells = [_cell(figures[c], digits.get(c, 4)) if c in figures else "" for c in columns]
    lines.append(f"| {method} | {n} | " + " | ".join(cells) + " |")
  return lines
