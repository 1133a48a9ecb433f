r"""The UCI regression benchmark for one data set and method: every split, chosen on validation rows.

  python scripts/uci.py --config=configs/uci_dropout.py --data=concrete --workdir=runs/uci/concrete/dropout
  python scripts/uci.py ... --parallel=2                                    # two local processes per stage
  python scripts/uci.py ... --stage=validation --index=$SLURM_ARRAY_TASK_ID  # then --stage=test, table

--data names a folder under $BNNJAX_DATA_DIR/uci (or --data_dir is the data set's own folder).
Writes <workdir>/uci.json and uci.md: test RMSE and log-likelihood (original units), mean ±
standard error over the splits, median log-likelihood, wall time, the published MC dropout
figures beside (see bnnjax.evaluation.uci for the protocol).
"""

import os
import sys

from absl import app, flags, logging

from bnnjax import config as config_lib
from bnnjax import sweep
from bnnjax.sweep import uci

_CONFIG = flags.DEFINE_string(
  "config", None, "configs/uci_<method>.py (get_config, get_grid, SELECT_NOISE, LAPLACE, NUTS)."
)
_DATA = flags.DEFINE_string(
  "data", "", "The data set's folder name under $BNNJAX_DATA_DIR/uci, e.g. concrete."
)
_DATA_DIR = flags.DEFINE_string("data_dir", "", "A UCI folder (data.txt, index_*.txt), or one holding uci/.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The benchmark's directory.")
_STAGE = flags.DEFINE_string("stage", "all", "all | validation | test | table.")
_INDEX = flags.DEFINE_integer("index", -1, "With one stage: only this run of it (a job array's task).")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Local processes per stage.")
_SPLITS = flags.DEFINE_string("splits", "", "Only splits a..b-1 ('a:b') or the first N ('N'); empty: all.")
_OVERRIDES = flags.DEFINE_multi_string(
  "set", [], "Extra field=value for every run, e.g. --set=num_epochs=40."
)
flags.mark_flags_as_required(["config", "workdir"])


def parse_splits(text: str):
  """None for "", range(N) for "N", range(a, b) for "a:b"; a one-line ValueError otherwise."""
  if not text:
    return None
  first, sep, end = text.partition(":")
  try:
    return range(int(first), int(end)) if sep else range(int(first))
  except ValueError:
    raise ValueError(f"--splits={text!r} is not N or a:b") from None


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    module = config_lib.load_config_file(_CONFIG.value)
    config = uci.base_config(
      module.get_config(), _DATA.value, _DATA_DIR.value, sweep.parse_sets(_OVERRIDES.value)
    )
    method = os.path.splitext(os.path.basename(_CONFIG.value))[0].removeprefix("uci_")
    command = "python " + " ".join(sys.argv)
    if module.NUTS:  # a reference posterior, not trained by the loop: no stages, no grid
      if _STAGE.value != "all" or _INDEX.value >= 0 or _PARALLEL.value != 1:
        raise ValueError("a NUTS config runs its splits in turn: use --splits=i:i+1 for one split per job")
      splits = parse_splits(_SPLITS.value)
      out = uci.run_nuts_benchmark(
        config, module.NUTS, _WORKDIR.value, splits=splits, method=method, command=command
      )
    else:
      out = uci.run_benchmark(
        config,
        module.get_grid(),
        module.SELECT_NOISE,
        _WORKDIR.value,
        stage=_STAGE.value,
        index=_INDEX.value,
        parallel=_PARALLEL.value,
        splits=parse_splits(_SPLITS.value),
        method=method,
        command=command,
        laplace=module.LAPLACE,
      )
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}") from None
  if out is not None:
    with open(os.path.join(_WORKDIR.value, "uci.md"), encoding="utf-8") as f:
      print(f.read(), end="")


if __name__ == "__main__":
  app.run(main)
