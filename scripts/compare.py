r"""Methods side by side: every finished run of a sweep evaluated the same way, one row per point.

  python scripts/compare.py --sweep=runs/compare --ood=fashion_mnist,kmnist --num_samples=16

Writes <sweep>/compare.json (every figure of every run, and each point's mean ± standard error
over its seeds) and <sweep>/compare.md (the headline table; see bnnjax.evaluation.comparison).
"""

import json
import os
import time

from absl import app, flags
import jax
import numpy as np

import bnnjax
from bnnjax.evaluation import comparison
from bnnjax.sweep import results

_SWEEP = flags.DEFINE_string("sweep", None, "A sweep's directory (scripts/sweep.py --workdir).")
_OOD = flags.DEFINE_list("ood", [], "OOD data sets (names or IDX folders).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 16, "K predictive samples, the same for every method.")
flags.mark_flags_as_required(["sweep"])


def _method(result: dict) -> str:
  """A point's label: its model and the overrides that tell it from the others."""
  extra = [f"{k.split('.')[-1]}={v}" for k, v in result["overrides"].items() if k != "model.name"]
  return " ".join([result["config"]["model"]["name"], *extra])


def _evaluate(workdir: str, result: dict) -> dict:
  run = bnnjax.load(workdir)
  report = run.evaluate(ood=_OOD.value, num_samples=_NUM_SAMPLES.value)
  x = run.test_data()["x"]
  run.predict(x, num_samples=_NUM_SAMPLES.value)  # compiled once, then timed
  tic = time.perf_counter()
  jax.block_until_ready(run.predict(x, num_samples=_NUM_SAMPLES.value).probs)
  predict_s = time.perf_counter() - tic
  num_params = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(run.params))
  return comparison.run_figures(report, result["elapsed_s"], predict_s, num_params)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  sweep = _SWEEP.value
  runs, rows = {}, {}
  for name in sorted(os.listdir(sweep)):
    workdir = os.path.join(sweep, name)
    result = results.read_result(workdir)
    if not result or result["status"] != results.FINISHED:
      continue
    figures = _evaluate(workdir, result)
    runs[name] = {"method": _method(result), "seed": result["seed"], **figures}
    rows.setdefault(_method(result), []).append(figures)
    print(f"{name}: accuracy {figures['accuracy']:.4f}  NLL {figures['nll']:.4f}")
  if not runs:
    raise SystemExit(f"error: no finished runs in {sweep}")
  table = comparison.summarise(rows)
  lines = comparison.markdown(table, _OOD.value)
  with open(os.path.join(sweep, "compare.json"), "w", encoding="utf-8") as f:
    summary = {"num_samples": _NUM_SAMPLES.value, "ood": _OOD.value, "runs": runs, "table": table}
    json.dump(summary, f, indent=2)
  with open(os.path.join(sweep, "compare.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
