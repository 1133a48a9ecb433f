r"""Methods side by side: every finished run of a sweep evaluated the same way, one row per point.

  python scripts/compare.py --sweep=runs/compare --ood=fashion_mnist,kmnist --num_samples=16
  python scripts/compare.py ... --runs=runs/compare_swag/seed=0,runs/compare_swag/seed=1 \
      --laplace=last_layer,kfac

Writes <sweep>/compare.json (every figure of every run, and each point's mean ± standard error
over its seeds) and <sweep>/compare.md (the headline table; see bnnjax.evaluation.comparison).
Methods that start from a trained run join the same table, evaluated the same way:
--runs: trained runs outside the sweep (SWAG from a sweep's MLP), one row per model name, their
  train s the logged training steps' time (metrics.jsonl; evaluation and start-up not counted);
--laplace: each structure fitted (bnnjax.methods.laplace.fit_run, λ by the marginal likelihood,
  --laplace_predictive) on every finished point-estimate run of the sweep, its train s the fit's
  time (the MAP run's own training not counted).
"""

import json
import os
import time

from absl import app, flags
import jax
import numpy as np

import bnnjax
from bnnjax.evaluation import comparison
from bnnjax.methods import laplace
from bnnjax import writers
from bnnjax.sweep import results

_SWEEP = flags.DEFINE_string("sweep", None, "A sweep's directory (scripts/sweep.py --workdir).")
_OOD = flags.DEFINE_list("ood", [], "OOD data sets (names or IDX folders).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 16, "K predictive samples, the same for every method.")
_RUNS = flags.DEFINE_list("runs", [], "Trained runs outside the sweep (e.g. SWAG), evaluated the same way.")
_LAPLACE = flags.DEFINE_list(
  "laplace", [], "Laplace structures (last_layer, diagonal, kfac) fitted on the sweep's point-estimate runs."
)
_LAPLACE_PREDICTIVE = flags.DEFINE_string("laplace_predictive", "glm", "--laplace: glm, mc or closed_form.")
flags.mark_flags_as_required(["sweep"])


def _method(result: dict) -> str:
  """A point's label: its model and the overrides that tell it from the others."""
  extra = [f"{k.split('.')[-1]}={v}" for k, v in result["overrides"].items() if k != "model.name"]
  return " ".join([result["config"]["model"]["name"], *extra])


def _is_point_estimate(result: dict) -> bool:
  name = result["config"]["model"]["name"]
  return name == "mlp" or name.startswith("point/")


def _training_seconds(workdir: str) -> float:
  """The logged training steps' time: each log interval's steps over its steps/s."""
  seconds, last = 0.0, 0
  for record in writers.read_metrics(workdir):
    if "train/steps_per_sec" in record:
      seconds += (record["step"] - last) / record["train/steps_per_sec"]
      last = record["step"]
  return seconds


def _evaluate(run, train_seconds: float) -> dict:
  """A Run's table figures: Run.evaluate, the test split's predictive timed, its floats held."""
  report = run.evaluate(ood=_OOD.value, num_samples=_NUM_SAMPLES.value)
  x = run.test_data()["x"]
  run.predict(x, num_samples=_NUM_SAMPLES.value)  # compiled once, then timed
  tic = time.perf_counter()
  jax.block_until_ready(run.predict(x, num_samples=_NUM_SAMPLES.value).probs)
  predict_s = time.perf_counter() - tic
  num_params = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(run.params))
  return comparison.run_figures(report, train_seconds, predict_s, num_params)


def _laplace_rows(workdir: str, name: str, result: dict, runs: dict, rows: dict) -> None:
  """Each --laplace structure fitted on the point run in `workdir`, evaluated as a row."""
  for structure in _LAPLACE.value:
    tic = time.perf_counter()
    run = laplace.fit_run(bnnjax.load(workdir), structure, predictive=_LAPLACE_PREDICTIVE.value)
    jax.block_until_ready(run.params)
    fit_s = time.perf_counter() - tic
    figures = _evaluate(run, fit_s)
    method = f"{run.config.model.name} predictive={_LAPLACE_PREDICTIVE.value}"
    figures["prior_precision"] = float(run.params.prior_precision)
    runs[f"{name}+laplace_{structure}"] = {"method": method, "seed": result["seed"], **figures}
    rows.setdefault(method, []).append(figures)
    fit = f"λ {figures['prior_precision']:.4g}"
    print(f"{name} {method}: {fit}, accuracy {figures['accuracy']:.4f}  NLL {figures['nll']:.4f}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  sweep = _SWEEP.value
  for structure in _LAPLACE.value:  # a bad name stops the script before anything is evaluated
    if structure not in laplace.STRUCTURES:
      raise SystemExit(f"error: --laplace: {structure!r} is not one of {', '.join(laplace.STRUCTURES)}")
  runs, rows = {}, {}
  for workdir in _RUNS.value:
    run = bnnjax.load(workdir)
    figures = _evaluate(run, _training_seconds(workdir))
    method = run.config.model.name
    runs[workdir] = {"method": method, "seed": run.config.seed, **figures}
    rows.setdefault(method, []).append(figures)
    print(f"{workdir}: accuracy {figures['accuracy']:.4f}  NLL {figures['nll']:.4f}")
    _write(sweep, runs, rows)
  for name in sorted(os.listdir(sweep)):
    workdir = os.path.join(sweep, name)
    result = results.read_result(workdir)
    if not result or result["status"] != results.FINISHED:
      continue
    figures = _evaluate(bnnjax.load(workdir), result["elapsed_s"])
    runs[name] = {"method": _method(result), "seed": result["seed"], **figures}
    rows.setdefault(_method(result), []).append(figures)
    print(f"{name}: accuracy {figures['accuracy']:.4f}  NLL {figures['nll']:.4f}")
    _write(sweep, runs, rows)
    if _LAPLACE.value and _is_point_estimate(result):
      _laplace_rows(workdir, name, result, runs, rows)
      _write(sweep, runs, rows)
  if not runs:
    raise SystemExit(f"error: no finished runs in {sweep}")
  print("\n".join(_write(sweep, runs, rows)))


def _write(sweep: str, runs: dict, rows: dict) -> list:
  """compare.json and compare.md of the rows so far (rewritten after each run: a long
  comparison stopped part way keeps what it measured); returns the table's lines."""
  table = comparison.summarise(rows)
  lines = comparison.markdown(table, _OOD.value)
  with open(os.path.join(sweep, "compare.json"), "w", encoding="utf-8") as f:
    summary = {"num_samples": _NUM_SAMPLES.value, "ood": _OOD.value, "runs": runs, "table": table}
    json.dump(summary, f, indent=2)
  with open(os.path.join(sweep, "compare.md"), "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return lines


if __name__ == "__main__":
  app.run(main)
