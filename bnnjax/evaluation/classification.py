"""Classification: calibration in distribution, OOD detection, a baseline side by side.

Pure functions of predictives (bnnjax.predictive.ClassificationPredictive, numpy) and labels;
conventions as in bnnjax.metrics (OOD = positive class, higher score = more OOD).
"""

from typing import Dict, Mapping

import numpy as np

from bnnjax import metrics, predictive

SCORE_DEFINITIONS = {
  "one_minus_max_prob": "1 - max_c p(c|x) of the predictive",
  "softmax_entropy": "entropy of the softmax of a point estimate (K = 1)",
  "predictive_entropy": "H[mean_k p_k]: total uncertainty",
  "mutual_information": "H[mean_k p_k] - mean_k H[p_k]: epistemic uncertainty",
  "class_std": "std over the K samples of the predicted class's probability",
}
OOD_CONVENTION = (
  "OOD = positive class; higher score = more OOD; rejection: "
  "score > 99th percentile of the in-distribution score"
)


def scores(pred: predictive.ClassificationPredictive, num_samples: int) -> Dict[str, np.ndarray]:
  """Every uncertainty score of a predictive drawn with K = num_samples, each [N]."""
  return {k: np.asarray(v) for k, v in predictive.uncertainty_scores(pred, num_samples).items()}


def in_distribution(pred: predictive.ClassificationPredictive, labels) -> dict:
  """{"in_distribution": accuracy, NLL, Brier, ECE; "reliability": the ECE's bins}."""
  rel = metrics.reliability(pred.probs, labels)
  return {
    "in_distribution": metrics.classification_metrics(pred.probs, labels),
    "reliability": {
      "bin_edges": rel.bin_edges,
      "confidence": rel.confidence,
      "accuracy": rel.accuracy,
      "count": rel.count,
    },
  }


def ood(scores_in: Mapping[str, np.ndarray], scores_out: Mapping[str, np.ndarray]) -> dict:
  """Per score: AUROC, AUPR, FPR at 95% TPR, the rejection rule and the mean scores."""
  n_out = len(next(iter(scores_out.values())))
  return {"num_examples": n_out, **metrics.ood_report(scores_in, scores_out)}


def side_by_side(ours: dict, baseline: dict) -> dict:
  """{ood set: {"<model>/<score>": AUROC}} for two reports (the baseline's names prefixed
  'baseline:' when both runs are of one model)."""
  ours_name, base_name = ours["model"], baseline["model"]
  if base_name == ours_name:
    base_name = f"baseline:{base_name}"
  table = {}
  for ood_name, per_score in ours["ood"].items():
    row = {f"{ours_name}/{s}": v["auroc"] for s, v in per_score.items() if isinstance(v, dict)}
    row.update(
      {
        f"{base_name}/{s}": v["auroc"]
        for s, v in baseline["ood"].get(ood_name, {}).items()
        if isinstance(v, dict)
      }
    )
    table[ood_name] = row
  return table
