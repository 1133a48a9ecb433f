r"""Evaluates a trained RealNVP run: pictures for 2-D densities, bits/dim for images.

  python scripts/flow_plots.py --workdir=runs/flow_moons
  python scripts/flow_plots.py --workdir=runs/flow_mnist --dequantization_draws=4

A thin caller of bnnjax.evaluation.density.evaluate on `bnnjax.load(workdir)`, with the
train and test splits the loop used (bnnjax.data.load_split: the run's data seed).
Writes into --workdir (the same files as before; scripts/evaluate.py writes eval.json with
these figures under "density"):

2-D data (moons, ring): flow_density.png (the learned density on a grid beside the test
points), flow_samples.png (flow samples beside the training points) and flow_eval.json with
the test log-likelihood of the flow and of a single Gaussian fitted to the training points
by maximum likelihood, with the grid's total mass.

Images (preprocess = "dequantize_logit"): flow_eval.json with the test bits/dim, averaged
over --dequantization_draws independent dequantisations, and flow_samples.png, a grid of
sampled images.
"""

import json

from absl import app, flags, logging

import bnnjax
from bnnjax import data
from bnnjax.evaluation import density, report

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory of a trained flow.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 2000, "Flow samples to draw (2-D) / 64 images.")
_GRID_SIZE = flags.DEFINE_integer("grid_size", 300, "Grid points per axis for the 2-D density.")
_DRAWS = flags.DEFINE_integer("dequantization_draws", 1, "Dequantisations averaged for bits/dim.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of samples and dequantisation noise.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    run = bnnjax.load(_WORKDIR.value)
    if run.task.density is None:
      raise ValueError(
        f"{_WORKDIR.value} holds a {run.config.model.name!r} run, which is "
        f"{' and '.join(run.capabilities)}, not a density model (flow)"
      )
    d = run.config.data
    results = density.evaluate(
      run.task.density,
      run.params,
      data.load_split(d, d.train_split),
      run.test_data(),
      seed=_SEED.value,
      out_dir=run.workdir,
      info=run.info,
      dequantization_draws=_DRAWS.value,
      grid_size=_GRID_SIZE.value,
      num_samples=_NUM_SAMPLES.value,
    )
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  pictures = results.pop("plots")
  results["data"] = d.name
  path = report.write_json(run.workdir, results, "flow_eval.json")
  print(json.dumps(report.json_safe(results), indent=2))
  print("wrote", path, *pictures)


if __name__ == "__main__":
  app.run(main)
