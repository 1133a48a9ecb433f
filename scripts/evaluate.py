r"""Evaluates a trained run by what its model declares it can do; writes eval.json and PNGs.

  python scripts/evaluate.py --workdir=runs/bayes_mnist --ood=fashion_mnist,kmnist \
      --num_samples=32 --compare=runs/mlp_mnist
  python scripts/evaluate.py --workdir=runs/vae --k=1000      # VAE family: IWAE log p(x), pictures
  python scripts/evaluate.py --workdir=runs/flow_moons        # flows: log-likelihood, densities

Classifiers: accuracy, NLL, Brier, ECE and the reliability diagram; for every --ood set (a
data set name, or a folder of MNIST-format t10k IDX files) AUROC, AUPR and FPR95 of every
uncertainty score and the rejection rule; --compare puts a baseline run's figures beside.
Regressors: RMSE, NLL, interval coverage. The logic lives in bnnjax.Run.evaluate.

Classifiers under shift and after the fact (fitted on config.data.validation_split):

  python scripts/evaluate.py --workdir=runs/bayes --shift=rotate,corrupt:fog --recalibrate \
      --conformal_alpha=0.1,0.05 --plot_with=runs/mlp,runs/ensemble

A trained point run with a Laplace posterior fitted on its training split first (written to
<workdir>/laplace_<structure>/eval.json; bnnjax.methods.laplace.fit_run):

  python scripts/evaluate.py --workdir=runs/mlp_digits --laplace=kfac --laplace_predictive=glm

--shift: accuracy, NLL, Brier, ECE and AURC per intensity (shift_<family>.png); --plot_with:
runs already evaluated with the same --shift (their eval.json) drawn on one figure beside this
one (shift_<family>_runs.png); with --replot, only that figure, from the eval.json of all of them.
"""

import dataclasses
import json

import os

from absl import app, flags, logging

import bnnjax
from bnnjax.evaluation import report, shift as shift_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints/ and config.json).")
_OOD = flags.DEFINE_list("ood", [], "OOD data set names and/or directories of IDX t10k files.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 32, "K posterior samples per input.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Data folder; default: the run's config.data.data_dir.")
_COMPARE = flags.DEFINE_string(
  "compare", "", "Another run (e.g. a deterministic MLP) to compare AUROCs with."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the posterior samples.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1000, "Inputs per forward pass (times K samples).")
_K = flags.DEFINE_integer("k", 0, "Generative models: importance samples per test input (0: the default).")
_SHIFT = flags.DEFINE_list("shift", [], "Classifiers: shift families, 'rotate' and/or 'corrupt:<name>'.")
_RECALIBRATE = flags.DEFINE_bool(
  "recalibrate", False, "Classifiers: temperature scaling on the validation split."
)
_CONFORMAL = flags.DEFINE_list(
  "conformal_alpha",
  [],
  "Conformal sets (classifiers) or intervals (regressors) at these alphas, e.g. 0.1,0.05.",
)
_PLOT_WITH = flags.DEFINE_list("plot_with", [], "Evaluated runs whose --shift curves join this run's figure.")
_REPLOT = flags.DEFINE_bool(
  "replot", False, "Only draw the --shift figures of --workdir and --plot_with from their eval.json."
)
_LAPLACE = flags.DEFINE_enum(
  "laplace", "", ["", "last_layer", "diagonal", "kfac"], "Point runs: evaluate this Laplace posterior."
)
_LAPLACE_PREDICTIVE = flags.DEFINE_string("laplace_predictive", "glm", "--laplace: glm, mc or closed_form.")
_LAPLACE_PRIOR = flags.DEFINE_float("laplace_prior_precision", 0.0, "--laplace: λ > 0, or 0 to tune it.")
flags.mark_flags_as_required(["workdir"])


def _other_curves(workdirs, families):
  """{label: {family: curve}} from the eval.json of runs evaluated with the same --shift."""
  out = {}
  for workdir in workdirs:
    path = os.path.join(workdir, "eval.json")
    if not os.path.isfile(path):
      raise ValueError(f"--plot_with: {path} does not exist; evaluate {workdir} with --shift first")
    with open(path, encoding="utf-8") as f:
      other = json.load(f)
    missing = [family for family in families if family not in other.get("shift", {})]
    if missing:
      raise ValueError(f"--plot_with: {path} has no shift curve for {', '.join(missing)}")
    out[f"{other['model']} ({workdir})"] = other["shift"]
  return out


def _draw(curves_by_run, families, folder):
  """shift_<family>_runs.png in folder: every run's curve of each family on one figure."""
  from bnnjax import plots  # pylint: disable=import-outside-toplevel  (matplotlib: only to draw)

  for family in families:
    curves = {label: shifts[family] for label, shifts in curves_by_run.items()}
    name = os.path.join(folder, f"shift_{family.replace(':', '_')}_runs.png")
    print(f"wrote {plots.shift_curves(curves, name, family)}")


def _summary_lines(result) -> str:
  lines = [shift_lib.summary(result.get("shift", {}))] if result.get("shift") else []
  if "temperature_scaling" in result:
    t = result["temperature_scaling"]
    lines.append(
      f"  temperature {t['temperature']:.3f} (fitted on {result['validation_split']}): "
      f"ECE {t['before']['ece']:.4f} -> {t['after']['ece']:.4f}, NLL {t['before']['nll']:.4f} -> "
      f"{t['after']['nll']:.4f}, accuracy {t['before']['accuracy']:.4f} -> {t['after']['accuracy']:.4f}"
    )
  for c in result.get("conformal", []) + result.get("regression", {}).get("conformal", []):
    size = "mean_set_size" if "mean_set_size" in c else "mean_width"
    lines.append(
      f"  conformal {c['method']} alpha={c['alpha']:g}: coverage {c['coverage']:.4f}, {size} {c[size]:.3f}"
    )
    for name in ("splits_to_test", "splits_within_validation", "splits_within_held_out"):
      if name in c:
        cov = c[name]["coverage"]
        lines.append(
          f"    {name} ({c[name]['num_splits']} draws of {c[name]['calibration_examples']}): coverage "
          f"{cov['mean']:.4f} +- {cov['std']:.4f} [{cov['min']:.4f}, {cov['max']:.4f}], "
          f"{size} {c[name][size]['mean']:.3f}"
        )
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  options = {"k": _K.value} if _K.value else {}
  try:
    alphas = [float(a) for a in _CONFORMAL.value]
  except ValueError:
    raise SystemExit(
      f"error: --conformal_alpha must be numbers in (0, 1), got {','.join(_CONFORMAL.value)}"
    ) from None
  if _REPLOT.value:
    try:
      _draw(_other_curves([_WORKDIR.value, *_PLOT_WITH.value], _SHIFT.value), _SHIFT.value, _WORKDIR.value)
    except ValueError as e:
      raise SystemExit(f"error: {e}") from None
    return
  try:
    others = _other_curves(_PLOT_WITH.value, _SHIFT.value)
    run = bnnjax.load(_WORKDIR.value)
    if _LAPLACE.value:
      from bnnjax.methods import laplace  # pylint: disable=import-outside-toplevel

      prior = _LAPLACE_PRIOR.value or None
      run = laplace.fit_run(
        run, _LAPLACE.value, prior, predictive=_LAPLACE_PREDICTIVE.value, data_dir=_DATA_DIR.value or None
      )
      run = dataclasses.replace(run, workdir=os.path.join(_WORKDIR.value, f"laplace_{_LAPLACE.value}"))
      os.makedirs(run.workdir, exist_ok=True)
      print(f"{run.config.model.name}: prior precision {float(run.params.prior_precision):.4g}")
    compare = bnnjax.load(_COMPARE.value) if _COMPARE.value else None
    result = run.evaluate(
      _OOD.value,
      _NUM_SAMPLES.value,
      _SEED.value,
      _BATCH_SIZE.value,
      _DATA_DIR.value or None,
      compare,
      write=True,
      shift=_SHIFT.value,
      recalibrate=_RECALIBRATE.value,
      conformal_alphas=alphas,
      **options,
    )
    if others:
      _draw(
        {f"{result['model']} ({_WORKDIR.value})": result["shift"], **others}, _SHIFT.value, _WORKDIR.value
      )
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  print(report.summary(result))
  if _summary_lines(result):
    print(_summary_lines(result))
  print(f"wrote {os.path.join(run.workdir, 'eval.json')}")


if __name__ == "__main__":
  app.run(main)
