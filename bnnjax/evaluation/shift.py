"""Shift curves: a classifier's accuracy, NLL, Brier and ECE as the test inputs shift more and
more (Ovadia et al. 2019), and its selective prediction under each shift.

A family is "rotate" (0°..180° in 15° steps) or "corrupt:<name>" (severities 0..5, 0 the clean
test split); the shifted images come from bnnjax.datasets.shift, seeded. The predictive is
any function of the inputs, so every method is measured alike (`bnnjax.Run.evaluate(shift=...)`).
"""

import math
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from bnnjax import metrics
from bnnjax.datasets import shift as shift_data
from bnnjax.evaluation import selective

METRICS = ("accuracy", "nll", "brier", "ece")


def check_families(families: Sequence[str]) -> Tuple[str, ...]:
  """Each family parsed ("rotate" or "corrupt:<name>"): one-line ValueErrors before anything runs."""
  for family in families:
    shift_data.parse_family(family)
  return tuple(families)


def as_images(x) -> np.ndarray:
  """x as images: [N, H, W] or [N, H, W, C] unchanged, a flat square [N, D] as [N, √D, √D]."""
  x = np.asarray(x)
  if x.ndim == 2:
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
      raise ValueError(f"shifts need images; inputs of shape {x.shape} are not square images")
    return x.reshape(len(x), side, side)
  if x.ndim not in (3, 4):
    raise ValueError(f"shifts need images [N, H, W(, C)], got inputs of shape {x.shape}")
  return x


def curve(
  predict: Callable,
  x,
  labels,
  family: str,
  seed: int = 0,
  thresholds: Optional[Mapping[str, float]] = None,
) -> Dict:
  """The figures of one shift family at each of its intensities.

  Args:
    predict: inputs [N, ...] -> (probs [N, C], {score name: [N]}) of the model's predictive.
    x: the clean test images (see as_images); labels: [N].
    family: "rotate" or "corrupt:<name>".
    seed: of the corruptions' random choices.
    thresholds: {score: t}: the in-distribution rejection rule "score > t", scored at each
      intensity (coverage and accuracy of what it keeps).
  Returns:
    {"family", "intensity": "angle" | "severity", "intensities": [...], and per METRICS a list
    over intensities, "aurc": {score: [...]}, "rejection_rule": {score: {"coverage": [...],
    "accuracy": [...]}}}.
  """
  kind, _ = shift_data.parse_family(family)
  images, labels = as_images(x), np.asarray(labels)
  levels = shift_data.intensities(family)
  out = {
    "family": family,
    "intensity": "angle" if kind == "rotate" else "severity",
    "intensities": list(levels),
    **{m: [] for m in METRICS},
    "aurc": {},
    "rejection_rule": {},
  }
  for level in levels:
    probs, scores = predict(shift_data.shifted(images, family, level, seed).reshape(np.shape(x)))
    for name, value in metrics.classification_metrics(probs, labels).items():
      out[name].append(value)
    correct = np.argmax(probs, axis=-1) == labels
    for name, score in scores.items():
      out["aurc"].setdefault(name, []).append(selective.risk_coverage(correct, score).aurc)
      if thresholds and name in thresholds:
        rule = selective.at_threshold(correct, score, thresholds[name])
        entry = out["rejection_rule"].setdefault(name, {"coverage": [], "accuracy": []})
        entry["coverage"].append(rule["coverage"])
        entry["accuracy"].append(rule["accuracy"])
  return out


def summary(curves: Mapping[str, Dict], label: str = "") -> str:
  """One line per family: accuracy / NLL / ECE at each intensity."""
  lines = []
  for family, c in curves.items():
    rows = zip(c["intensities"], c["accuracy"], c["nll"], c["ece"])
    points = "  ".join(f"{i}: {a:.3f}/{n:.3f}/{e:.3f}" for i, a, n, e in rows)
    lines.append(f"  {label}shift {family} ({c['intensity']}: accuracy/NLL/ECE) {points}")
  return "\n".join(lines)
