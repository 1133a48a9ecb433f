r"""Trains a continual-learning sequence (permuted or split MNIST) and prints its accuracy matrix.

  python scripts/continual.py --config=configs/vcl_permuted_mnist.py --workdir=runs/vcl
  python scripts/continual.py --config=configs/vcl_split_mnist.py --workdir=runs/split_coreset \
      --config.data.coreset_size=40          # split MNIST, multi-head, VCL + a random coreset of 40
  python scripts/continual.py --config=configs/vcl_permuted_mnist.py --workdir=runs/finetune \
      --method=finetune --model=mlp --config.optimizer.lr_multipliers=   # plain fine-tuning of an MLP
  python scripts/continual.py --config=configs/vcl_permuted_mnist.py --workdir=runs/ewc \
      --method=ewc --model=mlp --ewc_lambda=100 --config.optimizer.lr_multipliers= \
      --compare=runs/vcl,runs/finetune          # online EWC; one figure of the three

The config file gives get_config() (the model and its training, task 1's data) and
get_tasks() (a list of config.data overrides, see bnnjax.continual). Running the same
command again resumes the sequence where it stopped. It writes <workdir>/continual.json and
average_accuracy.png (with --compare, the other sequences' curves on the same figure).
"""

import json
import os


from absl import app, flags, logging
from ml_collections import config_flags
import numpy as np

from bnnjax import config as config_lib
from bnnjax import continual, plots

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file with get_config() and get_tasks(); --config.<field>=... overrides fields."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The sequence's folder: one sub-folder per task.")
_METHOD = flags.DEFINE_enum("method", "vcl", list(continual.METHODS), "How task t starts from task t - 1.")
_MODEL = flags.DEFINE_string(
  "model",
  "",
  "Another config.model.name (e.g. mlp for plain "
  "fine-tuning); the fields both models have keep their values.",
)
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 16, "K predictive samples for the accuracy matrix.")
_EWC_LAMBDA = flags.DEFINE_float("ewc_lambda", None, "λ of --method=ewc (config.model.ewc_lambda).")
_EVAL_SPLIT = flags.DEFINE_enum(
  "eval_split", "test", ["test", "validation"], "The split of the accuracy matrix (validation: to choose λ)."
)
_CORESET_STEPS = flags.DEFINE_integer(
  "coreset_steps", 100, "Steps of each coreset refinement (VCL with --config.data.coreset_size > 0)."
)
_REFINE_LAST_ONLY = flags.DEFINE_bool(
  "refine_last_only", False, "Refine on the coresets only after the last task (earlier rows unrefined)."
)
_COMPARE = flags.DEFINE_list("compare", [], "Other sequences' workdirs whose curves join the figure.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    tasks = config_lib.load_config_file(config_flags.get_config_filename(flags.FLAGS["config"])).get_tasks()
    overrides = {"model.name": _MODEL.value} if _MODEL.value else {}
    if _EWC_LAMBDA.value is not None:
      overrides["model.ewc_lambda"] = _EWC_LAMBDA.value
    config = config_lib.with_overrides(_CONFIG.value, overrides)
    result = continual.fit_sequence(
      config,
      tasks,
      _WORKDIR.value,
      _METHOD.value,
      _NUM_SAMPLES.value,
      _EVAL_SPLIT.value,
      _CORESET_STEPS.value,
      _REFINE_LAST_ONLY.value,
    )
    curves = {f"{result.method} ({_WORKDIR.value})": result.average_accuracy().tolist()}
    for other in _COMPARE.value:
      with open(os.path.join(other, "continual.json"), encoding="utf-8") as f:
        saved = json.load(f)
      curves[f"{saved['method']} ({other})"] = saved["average_accuracy"]
  except (ValueError, FileNotFoundError, FloatingPointError) as e:
    raise SystemExit(f"error: {e}") from None
  print(f"{result.method}: accuracy[i][j] = test accuracy on task j after training task i")
  print(np.array2string(result.accuracy, precision=3, max_line_width=200))
  print("average accuracy after each task:", np.round(result.average_accuracy(), 4).tolist())
  print("mean NLL over the tasks seen, after each task:", np.round(result.seen_mean(result.nll), 4).tolist())
  print("mean ECE over the tasks seen, after each task:", np.round(result.seen_mean(result.ece), 4).tolist())
  print(f"backward transfer: {result.backward_transfer():.4f}")
  print("wrote", plots.average_accuracy_curves(curves, os.path.join(_WORKDIR.value, "average_accuracy.png")))


if __name__ == "__main__":
  app.run(main)
