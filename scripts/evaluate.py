r"""Evaluates a trained run by what its model declares it can do; writes eval.json and PNGs.

  python scripts/evaluate.py --workdir=runs/bayes_mnist --ood=fashion_mnist,kmnist \
      --num_samples=32 --compare=runs/mlp_mnist
  python scripts/evaluate.py --workdir=runs/vae --k=1000      # VAE family: IWAE log p(x), pictures
  python scripts/evaluate.py --workdir=runs/flow_moons        # flows: log-likelihood, densities

Classifiers: accuracy, NLL, Brier, ECE and the reliability diagram; for every --ood set (a
data set name, or a folder of MNIST-format t10k IDX files) AUROC, AUPR and FPR95 of every
uncertainty score and the rejection rule; --compare puts a baseline run's figures beside.
Regressors: RMSE, NLL, interval coverage. The logic lives in bnnjax.Run.evaluate.
"""

import os

from absl import app, flags, logging

import bnnjax
from bnnjax.evaluation import report

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
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  options = {"k": _K.value} if _K.value else {}
  try:
    run = bnnjax.load(_WORKDIR.value)
    compare = bnnjax.load(_COMPARE.value) if _COMPARE.value else None
    result = run.evaluate(
      _OOD.value,
      _NUM_SAMPLES.value,
      _SEED.value,
      _BATCH_SIZE.value,
      _DATA_DIR.value or None,
      compare,
      write=True,
      **options,
    )
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  print(report.summary(result))
  print(f"wrote {os.path.join(_WORKDIR.value, 'eval.json')}")


if __name__ == "__main__":
  app.run(main)
