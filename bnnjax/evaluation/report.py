"""Reports as plain, JSON-safe dicts; eval.json; one-line summaries for the console."""

import json
import os

import numpy as np


def json_safe(value):
  """NaN (an empty reliability bin) -> None, numpy -> Python, tuples -> lists, recursively."""
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, np.ndarray):
    value = value.tolist()
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return None if not np.isfinite(value) else float(value)
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.bool_):
    return bool(value)
  return value


def write_json(folder: str, report: dict, name: str = "eval.json") -> str:
  """Writes `report` as <folder>/<name>; returns the path."""
  path = os.path.join(folder, name)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(json_safe(report), f, indent=2)
  return path


def summary(report: dict) -> str:
  """A few lines of the headline figures of any report `bnnjax.Run.evaluate` returns."""
  lines = []
  if "in_distribution" in report:
    m = report["in_distribution"]
    lines.append(
      f"{report['model']} (K={report['num_samples']}, checkpoint step "
      f"{report.get('checkpoint_step')}) on {report['data']}: accuracy "
      f"{m['accuracy']:.4f}  NLL {m['nll']:.4f}  Brier {m['brier']:.4f}  ECE {m['ece']:.4f}"
    )
    for name, per_score in report.get("ood", {}).items():
      aurocs = "  ".join(f"{s} {v['auroc']:.4f}" for s, v in per_score.items() if isinstance(v, dict))
      lines.append(f"  OOD {name}: AUROC {aurocs}")
  if "regression" in report:
    r = report["regression"]
    lines.append(
      f"RMSE {r['rmse']:.4f}  NLL {r['nll']:.4f}  coverage@{r['interval_level']} {r['coverage']:.4f}"
    )
  for key in ("generative", "density"):
    if key in report:
      figures = {k: v for k, v in report[key].items() if isinstance(v, float)}
      lines.append(f"{key}: " + "  ".join(f"{k} {v:.4f}" for k, v in figures.items()))
  return "\n".join(lines)
